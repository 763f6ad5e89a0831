"""Peak memory of a whole render against film length and scene count (issue 10).

Renders synthetic stories over the reference photos (``stories/images/``; transitions alternate
handoff and cut) with ``wan-pipeline render`` on fresh storage roots, and measures the render's
peak RSS: the resident memory of the CLI process and all its children, summed, sampled every
0.1 s with psutil (and never below the kernel's ``ru_maxrss`` of the process, which catches a
peak between samples). Prints one row per render — preset, scenes, seconds of film, peak RSS
(MB), wall time (s), disk per stage (MB) — and the ratio of each pair (long / short). Target:
every ratio ≤ 1.3, i.e. memory flat in film length and scene count.

Pairs (``--pairs``):

* ``scenes``: preview preset, 2 scenes vs 16 scenes of 3 s;
* ``length``: preview preset, one scene of 3 s vs one of 60 s;
* ``tiny``: tiny preset (miniature Wan models), 2 vs 8 scenes of ``--tiny-seconds`` s.

``--long`` renders the 5-minute story instead (30 scenes × 10 s, preview preset) and prints the
same row (target: peak RSS ≤ 2.5 GB).

    nice python tests/benchmarks/memory_scaling.py [--pairs scenes length tiny] [--long]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGES = ["rocket.jpg", "astronaut.png", "chelsea.png", "coffee.png"]
CAMERAS = ["zoom_in", "pan_right", "zoom_out", "pan_left"]


def write_story(folder: Path, scenes: int, seconds: float) -> Path:
    """A story of ``scenes`` scenes of ``seconds`` s over the reference photos, transitions
    alternating handoff / cut; returns its path."""
    story = {
        "id": f"bench_{scenes}x{int(seconds)}",
        "title": f"{scenes} scenes of {seconds} s",
        "scenes": [
            {
                "id": f"s{i:02d}",
                "prompt": f"scene {i}",
                "duration_s": seconds,
                "seed": i,
                "keyframe": {"image": f"images/{IMAGES[i % len(IMAGES)]}"},
                "camera": CAMERAS[i % len(CAMERAS)],
                "transition": "handoff" if i % 2 == 0 else "cut",
            }
            for i in range(scenes)
        ],
    }
    if not (folder / "images").is_dir():
        shutil.copytree(REPO / "stories" / "images", folder / "images")
    path = folder / f"{story['id']}.yaml"
    path.write_text(yaml.safe_dump(story, sort_keys=False))
    return path


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # the render just ended
        return 0
    for p in tree:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def render(story: Path, preset: str) -> dict:
    """Render ``story`` with ``preset`` on a fresh storage root; returns peak RSS (MB), wall (s)
    and the disk each stage's outputs take (MB)."""
    root = Path(tempfile.mkdtemp(prefix="wan-mem-"))
    env = dict(os.environ, WAN_PIPELINE_STORAGE=str(root), DAGSTER_HOME=str(root), PYTHONPATH=str(REPO))
    (root / "dagster.yaml").write_text((REPO / "storage" / "dagster.yaml").read_text())
    cmd = [sys.executable, "-m", "wan_pipeline.cli", "render", str(story), "--preset", preset]
    peak = 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(ps))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    peak = max(peak, usage.ru_maxrss * 1024)
    disk: dict[str, float] = {}
    for f in (root / "outputs").rglob("*.mp4"):
        disk[f.stem] = disk.get(f.stem, 0.0) + f.stat().st_size / 1e6
    return {"peak_mb": peak / 2**20, "wall_s": wall, "disk_mb": disk, "root": str(root)}


PAIRS = {
    "scenes": ("preview", (2, 3.0), (16, 3.0)),
    "length": ("preview", (1, 3.0), (1, 60.0)),
    "tiny": ("tiny", (2, None), (8, None)),
}


def _row(preset: str, scenes: int, seconds: float, r: dict) -> str:
    disk = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["disk_mb"].items()))
    return f"{preset:8} {scenes:6d} {scenes * seconds:9.0f} {r['peak_mb']:9.0f} {r['wall_s']:8.1f}   {disk}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--tiny-seconds", type=float, default=3.0, help="scene length of the tiny pair")
    parser.add_argument("--long", action="store_true", help="the 5-minute story (30 scenes x 10 s, preview preset) only")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="wan-mem-stories-"))
    print(f"{'preset':8} {'scenes':>6} {'film (s)':>9} {'peak MB':>9} {'wall s':>8}   disk per stage (MB)", flush=True)
    if args.long:
        r = render(write_story(folder, 30, 10.0), "preview")
        print(_row("preview", 30, 10.0, r), flush=True)
        print(f"5-minute story: peak RSS {r['peak_mb']:.0f} MB (target <= 2560), wall {r['wall_s'] / 60:.1f} min")
        return
    ratios = []
    for name in args.pairs:
        preset, small, large = PAIRS[name]
        results = []
        for scenes, seconds in (small, large):
            seconds = seconds if seconds is not None else args.tiny_seconds
            r = render(write_story(folder, scenes, seconds), preset)
            print(_row(preset, scenes, seconds, r), flush=True)
            results.append(r)
        ratio = results[1]["peak_mb"] / results[0]["peak_mb"]
        ratios.append((name, ratio))
    for name, ratio in ratios:
        print(f"ratio {name}: {ratio:.2f} (target <= 1.30)")


if __name__ == "__main__":
    main()
