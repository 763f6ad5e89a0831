"""Atomic file writes: write to a temporary file beside the target, then rename into place.

The temporary file is ``.<stem>.<host>-<pid>.<random>.part<suffix>``: hidden, never read as an
output, and naming its writer (``host`` tags the PID space: host, boot and PID namespace), so
that a leftover from a killed writer can be told apart from a file another live process is still
writing (:func:`remove_stale_parts`). Files are created with mode 0666 minus the umask (0644
under the usual 022), as ``open()`` would, not 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil


def _pid_space() -> str:
    """What makes a PID meaningful: the host, its boot and the PID namespace (containers)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


#: This PID space in temporary names: a PID written by another host, boot or container means
#: nothing here (shared storage), so such files are judged by age only.
HOST_TAG = hashlib.sha1(_pid_space().encode(), usedforsecurity=False).hexdigest()[:8]
#: A temporary file written to within this many seconds is never removed, whoever wrote it (s).
MIN_IDLE_S = 60.0
#: A temporary file whose writer cannot be identified (another host, or an older naming scheme)
#: is removed only after this many seconds without a write (s); no single write takes a day.
UNKNOWN_WRITER_MAX_AGE_S = 24 * 3600
#: Slack between a process's start time and a file's mtime (s): filesystem timestamps are coarse.
CLOCK_SLACK_S = 2.0

_PART = re.compile(r"^\.(?P<stem>.*?)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.)?[0-9a-z_]{8}\.part(?P<suffix>(?:\.[^.]*)?)$")


def _part_path(target: Path) -> Path:
    """Create (O_EXCL, mode 0666 & ~umask) and return a fresh temporary path beside ``target``."""
    while True:
        tmp = target.parent / f".{target.stem}.{HOST_TAG}-{os.getpid()}.{secrets.token_hex(4)}.part{target.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def _writer_gone(host: str | None, pid: str | None, mtime: float, now: float) -> bool:
    """Whether the process that wrote a temporary file can no longer be writing it."""
    if now - mtime < MIN_IDLE_S:
        return False
    if host != HOST_TAG or pid is None:
        return now - mtime > UNKNOWN_WRITER_MAX_AGE_S
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        # a process started after the file's last write is not its writer (the PID was reused)
        return proc.create_time() > mtime + CLOCK_SLACK_S
    except (psutil.NoSuchProcess, ValueError, OverflowError):
        return True
    except psutil.Error:  # AccessDenied and the like: assume it is alive
        return False


def remove_stale_parts(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` in ``folder`` whose writer is gone.

    Gone: the file was not written to for :data:`MIN_IDLE_S`, and the PID in its name is not
    running or is a process started after the file was last written (PID reuse). A file from
    another PID space (host, boot, container) or without a PID is removed only after
    :data:`UNKNOWN_WRITER_MAX_AGE_S`. A file a live process is writing is never touched.
    Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.part*") if recursive else folder.glob(".*.part*")
    removed, now = [], time.time()
    for path in candidates:
        m = _PART.match(path.name)
        if m is None or not path.is_file() or path.is_symlink():
            continue
        try:
            mtime = path.stat().st_mtime
            if _writer_gone(m["host"], m["pid"], mtime, now):
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue  # its writer finished (renamed it) or another cleaner was first
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``.

    If the body raises (or the process dies), ``target`` keeps its previous content and the
    temporary file is removed (after a kill, by the next write into that folder: stale
    temporaries of dead writers there are removed first). The temporary name keeps the target's
    suffix so that writers that pick a format from the suffix (PyAV, Pillow) still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target.parent)
    tmp_path = _part_path(target)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``target`` atomically; returns the target path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)
