"""The storage root's Dagster instance, opened safely when several commands start at once.

``DAGSTER_HOME`` is the storage root unless set. The first ``DagsterInstance.get()`` on a fresh
root creates the SQLite databases and stamps their schema revision; Dagster does not guard that
against a second process, so :func:`storage_instance` does it under the storage layout's
cross-process lock (:meth:`wan_pipeline.storage.StorageLayout.instance_lock`). Every command that
opens the instance (``render``, ``status``, ``recover``) comes through here.
"""

from __future__ import annotations

import os

import dagster as dg

from wan_pipeline.storage import StorageLayout


def storage_instance(layout: StorageLayout) -> dg.DagsterInstance:
    """The Dagster instance of ``layout`` (created with its folders and ``dagster.yaml`` on first
    use); sets ``DAGSTER_HOME`` to the storage root unless it is set. Raises
    :class:`~wan_pipeline.errors.WanPipelineError` when another process holds the lock too long."""
    os.environ.setdefault("DAGSTER_HOME", str(layout.root))
    with layout.instance_lock():
        layout.init()
        return dg.DagsterInstance.get()  # creates (or checks) every storage's database: all inside the lock
