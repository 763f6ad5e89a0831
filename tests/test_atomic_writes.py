"""Atomic writes (issue 11): outputs readable by others (0666 minus umask), leftovers of killed
writers cleaned, and a file another live process is writing never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from wan_pipeline.media.atomic import HOST_TAG, MIN_IDLE_S, UNKNOWN_WRITER_MAX_AGE_S, atomic_path, remove_stale_parts, write_text_atomic
from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import write_image
from wan_pipeline.media.video_io import write_video

ROOT = Path(__file__).resolve().parent.parent

# writes ``argv[1]`` through atomic_path, says "writing" once its temporary file exists, then
# waits for a line on stdin (or to be killed) before finishing
HOLDER = """
import sys
from wan_pipeline.media.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("new content")
    print("writing", flush=True)
    sys.stdin.readline()
"""


def _holder(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _age(path: Path, seconds: float) -> None:
    """Set ``path``'s times ``seconds`` into the past."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".part" in p.name)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_are_created_readable_by_others(tmp_path, umask_022):
    frames = np.full((3, 16, 16, 3), 100, np.uint8)
    paths = [
        write_video(tmp_path / "clip.mp4", Clip(frames, Fraction(8))).path,
        write_image(tmp_path / "keyframe.png", frames[0]),
        write_text_atomic(tmp_path / "clip.json", "{}\n"),
    ]
    for path in paths:
        assert Path(path).stat().st_mode & 0o777 == 0o644, path
    os.umask(0o077)
    assert write_text_atomic(tmp_path / "private.json", "{}").stat().st_mode & 0o777 == 0o600  # the umask decides


def test_leftover_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "clip.json"
    write_text_atomic(target, "good")
    proc = _holder(target)
    (leftover,) = _parts(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    assert target.read_text() == "good" and leftover.exists()
    write_text_atomic(tmp_path / "other.json", "x")
    assert leftover.exists()  # written to a moment ago: left alone for MIN_IDLE_S, whoever wrote it
    _age(leftover, MIN_IDLE_S + 1)
    write_text_atomic(tmp_path / "other.json", "x")  # any write into the folder cleans it
    assert _parts(tmp_path) == [] and target.read_text() == "good"


def test_a_live_writers_temporary_file_is_never_removed(tmp_path, monkeypatch):
    from wan_pipeline.media import atomic

    monkeypatch.setattr(atomic, "MIN_IDLE_S", 0.0)  # judged by its writer alone, not by its age
    target = tmp_path / "clip.json"
    proc = _holder(target)
    try:
        (live,) = _parts(tmp_path)
        write_text_atomic(tmp_path / "other.json", "x")
        assert remove_stale_parts(tmp_path, recursive=True) == []
        assert live.exists()
    finally:
        proc.communicate("go\n", timeout=10)
    assert proc.returncode == 0 and target.read_text() == "new content" and _parts(tmp_path) == []


def test_reused_pid_old_names_and_other_hosts(tmp_path):
    now = time.time()
    # our own PID, but the file was last written before this process started: PID reuse
    reused = tmp_path / f".clip.{HOST_TAG}-{os.getpid()}.0123abcd.part.mp4"
    # a dead PID (a finished child)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = tmp_path / f".keyframe.{HOST_TAG}-{child.stdout.strip()}.0123abcd.part.png"
    # names without a writer of this host: removed only when older than a day
    old_scheme_recent = tmp_path / ".clip.k2j_x9ab.part.mp4"
    old_scheme_old = tmp_path / ".upscaled.k2j_x9ac.part.mp4"
    other_host_recent = tmp_path / ".clip.ffffffff-1.0123abcd.part.mp4"
    other_host_old = tmp_path / ".interpolated.ffffffff-1.0123abce.part.mp4"
    unrelated = tmp_path / ".notes.part"
    just_written = tmp_path / f".film.{HOST_TAG}-{child.stdout.strip()}.0123abcf.part.mp4"  # dead PID, but fresh
    for p in (reused, dead, old_scheme_recent, old_scheme_old, other_host_recent, other_host_old, unrelated, just_written):
        p.write_text("partial")
    for p in (dead, old_scheme_recent, other_host_recent, unrelated):
        _age(p, MIN_IDLE_S + 1)
    os.utime(reused, (now - 3 * 24 * 3600, now - 3 * 24 * 3600))
    for p in (old_scheme_old, other_host_old):
        os.utime(p, (now - UNKNOWN_WRITER_MAX_AGE_S - 60,) * 2)
    removed = set(remove_stale_parts(tmp_path))
    assert removed == {reused, dead, old_scheme_old, other_host_old}
    assert old_scheme_recent.exists() and other_host_recent.exists() and unrelated.exists() and just_written.exists()


def test_atomic_path_leaves_nothing_when_the_body_fails(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.mp4") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []


def test_recover_command_cleans_leftovers_under_the_outputs(tmp_path, monkeypatch, capsys):
    from wan_pipeline.cli import main

    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "storage"))
    scene = tmp_path / "storage" / "outputs" / "tale" / "one"
    scene.mkdir(parents=True)
    good = scene / "clip.mp4"
    good.write_bytes(b"good output")
    target = scene / "upscaled.mp4"
    proc = _holder(target)
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    (leftover,) = _parts(scene)
    _age(leftover, MIN_IDLE_S + 1)
    assert main(["recover"]) == 0
    assert str(leftover) in capsys.readouterr().out
    assert _parts(scene) == [] and good.read_bytes() == b"good output" and not target.exists()
