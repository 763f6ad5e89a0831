"""Scenes in parallel: an 8-scene preview story with one CPU device slot and with two.

Writes an 8-scene story (the demo's photos and prompts, 1 s per scene, handoffs and cuts
alternating) and renders it with ``wan-pipeline render --preset preview`` on fresh storage roots,
once with ``WAN_PIPELINE_DEVICES=cpu`` and once with ``cpu,cpu``. Prints per configuration the wall
time of the whole command, the stage time summed over the telemetry, how many seconds two stages
ran at the same time (from the sidecars' ``started_at`` / ``finished_at`` on different
``device_slot``), and the speed-up (1 slot / 2 slots). ``--story`` renders another story instead
(the demo: ``stories/launch_day.yaml``). On a 2-core machine the two slots share the cores: each
run of a phase gets its share of the thread pools (OpenCV, the video codecs, torch).

    python tests/benchmarks/parallel_scenes.py [--scenes 8] [--duration 1.0] [--story FILE] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_story(folder: Path, scenes: int, duration: float) -> Path:
    demo = yaml.safe_load((REPO / "stories" / "launch_day.yaml").read_text())
    shutil.copytree(REPO / "stories" / "images", folder / "images")
    out = []
    for i in range(scenes):
        src = dict(demo["scenes"][i % len(demo["scenes"])])
        src.update(id=f"s{i + 1}", duration_s=duration, transition="handoff" if i % 2 == 0 else "cut")
        out.append(src)
    out[-1].pop("transition", None)
    data = {k: v for k, v in demo.items() if k != "scenes"} | {"id": "parallel_bench", "scenes": out}
    path = folder / "parallel_bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def busy_s(records: list[dict]) -> float:
    """Seconds during which at least one stage ran (the union of the stages' intervals)."""
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]).timestamp(), datetime.fromisoformat(r["finished_at"]).timestamp()) for r in records
    )
    total, end = 0.0, None
    for a, b in spans:
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def overlap_s(records: list[dict]) -> float:
    """Seconds during which stages on two different slots ran at the same time."""
    events = []
    for r in records:
        events.append((datetime.fromisoformat(r["started_at"]).timestamp(), 1))
        events.append((datetime.fromisoformat(r["finished_at"]).timestamp(), -1))
    events.sort()
    running, last, both = 0, None, 0.0
    for t, step in events:
        if running >= 2 and last is not None:
            both += t - last
        running += step
        last = t
    return both


def render(story: Path, devices: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"parallel-{devices.count(',') + 1}slot-"))
    env = dict(os.environ, WAN_PIPELINE_STORAGE=str(root), DAGSTER_HOME=str(root), WAN_PIPELINE_DEVICES=devices)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    os.sync()  # the previous render's writeback stays out of this one's wall time
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "wan_pipeline.cli", "render", str(story), "--preset", "preview"], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"render with {devices} failed:\n{proc.stderr[-3000:]}")
    story_id = yaml.safe_load(story.read_text())["id"]
    records = [json.loads(p.read_text()) for p in (root / "outputs" / story_id).glob("**/*.json") if p.name != "run-summary.json"]
    records = [r for r in records if "started_at" in r]
    shutil.rmtree(root, ignore_errors=True)
    return {
        "wall_s": wall,
        "stage_s": sum(r["duration_s"] for r in records),
        "overlap_s": overlap_s(records),
        "busy_s": busy_s(records),
        "slots_used": sorted({r["device_slot"] for r in records}),
        "stages": len(records),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per scene")
    ap.add_argument("--story", type=Path, help="render this story file instead (e.g. the demo, stories/launch_day.yaml)")
    ap.add_argument("--repeat", type=int, default=1, help="renders per configuration, alternating; the speed-up uses each one's fastest")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        story = args.story.resolve() if args.story else write_story(Path(tmp), args.scenes, args.duration)
        results: dict[str, list[dict]] = {"cpu": [], "cpu,cpu": []}
        for _ in range(args.repeat):
            for devices in results:
                r = render(story, devices)
                results[devices].append(r)
                print(
                    f"{devices:8s} wall {r['wall_s']:6.1f} s  stage time {r['stage_s']:6.1f} s  stages {r['stages']}  "
                    f"slots used {r['slots_used']}  two stages at once {r['overlap_s']:5.1f} s  "
                    f"no stage running {r['wall_s'] - r['busy_s']:5.1f} s (start-up, runs, phases)",
                    flush=True,
                )
    best = {k: min(r["wall_s"] for r in v) for k, v in results.items()}
    print(f"cpu cores: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"fastest wall: 1 slot {best['cpu']:.1f} s, 2 slots {best['cpu,cpu']:.1f} s")
    print(f"speed-up (1 slot / 2 slots): {best['cpu'] / best['cpu,cpu']:.2f}")


if __name__ == "__main__":
    main()
