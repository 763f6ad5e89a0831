"""Which Dagster executor runs the steps: in-process / multiprocess on this machine (default), or
Dagster's Celery executor (``dagster-celery``) spreading steps over Celery workers on several
machines.

    WAN_PIPELINE_EXECUTOR=celery                     the code location's jobs use the Celery executor
    WAN_PIPELINE_CELERY_BROKER=redis://host:6379/0   its broker (and result backend)

Each machine runs one worker whose concurrency is its number of device slots, all sharing the
PostgreSQL instance (``WAN_PIPELINE_DATABASE_URL``) and the storage root::

    WAN_PIPELINE_DEVICES=cuda:0,cuda:1 dagster-celery worker start -A dagster_celery.app \\
        -y celery.yaml -n "$(hostname)" -- --concurrency=2
"""

from __future__ import annotations

import os

EXECUTOR_ENV = "WAN_PIPELINE_EXECUTOR"
BROKER_ENV = "WAN_PIPELINE_CELERY_BROKER"


def celery_enabled() -> bool:
    """True when ``WAN_PIPELINE_EXECUTOR=celery``."""
    return os.environ.get(EXECUTOR_ENV, "").strip().lower() == "celery"


def celery_config() -> dict:
    """The Celery executor's config: broker and result backend from ``WAN_PIPELINE_CELERY_BROKER``.
    Raises :class:`~wan_pipeline.errors.InputError` when it is unset."""
    from wan_pipeline.errors import InputError

    broker = os.environ.get(BROKER_ENV, "")
    if not broker:
        raise InputError(None, f"{EXECUTOR_ENV}=celery needs {BROKER_ENV} (e.g. redis://localhost:6379/0)")
    return {"broker": broker, "backend": broker}


def code_location_executor():
    """The executor of every job of the code location: Celery when enabled, else None (Dagster's
    default: multiprocess, in-process for ``materialize``)."""
    if not celery_enabled():
        return None
    try:
        from dagster_celery import celery_executor
    except ImportError:
        from wan_pipeline.errors import InputError

        raise InputError(None, f"{EXECUTOR_ENV}=celery needs dagster-celery: pip install dagster-celery redis") from None

    return celery_executor.configured(celery_config())


def celery_worker_yaml() -> str:
    """The ``-y`` file of ``dagster-celery worker start``: the same broker as the executor."""
    import yaml

    return yaml.safe_dump({"execution": {"config": celery_config()}}, sort_keys=False)
