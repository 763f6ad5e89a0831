"""What orchestration costs: ``wan-pipeline render`` against the same engines in a plain loop.

Renders a story (default: the demo, ``stories/launch_day.yaml``, preset ``preview``) on fresh
storage roots, alternately:

* **dagster**: ``wan-pipeline render STORY --preset P`` — the Dagster run, the stage runner
  (device lock, telemetry, sidecars, previews), the pre-render check;
* **plain**: one Python process that builds each stage's engine from the same preset through the
  stage table and calls each row's ``work`` for every scene in graph order, writing the same output
  files — no Dagster, no telemetry, no sidecar, no preview file, no report. The ``work`` functions
  are the stages' own, so while they stream they keep the frames the previews would be made from
  (the contact sheet's six, the animation's small copies); nothing is made from them.

CPU time = user + sys of the child process and its children (``os.wait4``), so both sides count
the same things. Prints both, their wall times, the outputs' pixel equality, the Dagster side's
extra CPU seconds (min − min, and per pair), and
``overhead ratio: X.XX`` (dagster / plain, the minimum of each side over ``--repeat`` pairs, 5 by
default: this VM's speed drifts by ±10 % within minutes, so one pair decides nothing). Target ≤ 1.10.
Also checks that both wrote the same outputs: every scene output bit-identical, the film by PSNR.

    python tests/benchmarks/orchestration_overhead.py [--story FILE] [--preset NAME] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def plain_loop(story_path: str, preset_name: str) -> None:
    """Render every stage of the story by calling the engines directly (the baseline)."""
    from wan_pipeline.engines.registry import build_engine
    from wan_pipeline.run_config import RunConfig
    from wan_pipeline.stage_work import StageJob
    from wan_pipeline.stages import STAGES
    from wan_pipeline.storage import StorageLayout
    from wan_pipeline.story import load_story

    story = load_story(story_path)
    config = RunConfig.resolve(story, preset_name, StorageLayout.default())
    ctx = config.engine_context()
    engines: dict = {}

    def engine_of(name: str, device: str | None = None):
        if name not in engines:
            engines[name] = build_engine(name, config.preset.stage(name), ctx)
        return engines[name]

    class Run:  # what a work function fills in; no measurement, no record
        def __init__(self, engine):
            self.engine, self.meta, self.output, self.preview = engine, {}, None, None

        def step(self, done, total):
            return None

    for row in STAGES:
        for scene in story.scene_ids if row.per_scene else [None]:
            row.work_fn(StageJob(config, row, scene, engine_of=engine_of), Run(engine_of(row.name)))


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(CPU seconds of the process and its children, wall seconds) of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return usage.ru_utime + usage.ru_stime, wall


def compare_outputs(a: Path, b: Path, story_id: str) -> tuple[bool, float]:
    """(every scene output bit-identical, the films' PSNR in dB). The film is the one lossy file:
    libx264's threaded encoder does not give the same bytes twice, so it is compared by PSNR."""
    import numpy as np

    from wan_pipeline.media.image_io import read_image
    from wan_pipeline.media.video_io import read_video

    same = True
    for path in sorted((a / "outputs" / story_id).rglob("*")):
        rel = path.relative_to(a)
        if path.name == "render-report.png":  # the report is Dagster's side only
            continue
        if path.suffix == ".png":
            same &= bool(np.array_equal(read_image(path), read_image(b / rel)))
        elif path.suffix == ".mp4" and path.name != "film.mp4":
            same &= bool(np.array_equal(read_video(path).frames, read_video(b / rel).frames))
    film = next((a / "outputs" / story_id).rglob("film.mp4")).relative_to(a)  # outputs/<story>/<take>/film.mp4
    x = read_video(a / film).frames.astype(np.float64)
    y = read_video(b / film).frames.astype(np.float64)
    if x.shape != y.shape:
        return same, 0.0
    mse = float(np.mean((x - y) ** 2))
    return same, float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--story", default=str(REPO / "stories" / "launch_day.yaml"))
    parser.add_argument("--preset", default="preview")
    parser.add_argument("--repeat", type=int, default=5, help="pairs of renders (default 5); the ratio uses the minimum of each side")
    args = parser.parse_args()
    from wan_pipeline.story import load_story

    story_id = load_story(args.story).id
    exe = Path(sys.executable)
    cli = str(exe.with_name("wan-pipeline"))
    rows = {"dagster": [], "plain": []}
    for i in range(args.repeat):
        for side in ("dagster", "plain"):
            root = Path(tempfile.mkdtemp(prefix=f"overhead-{side}-"))
            env = {**os.environ, "WAN_PIPELINE_STORAGE": str(root), "DAGSTER_HOME": str(root)}
            if side == "dagster":
                cmd = [cli, "render", args.story, "--preset", args.preset]
            else:
                cmd = [str(exe), __file__, "--plain-child", args.story, args.preset]
            os.sync()  # the previous render's writeback (≈ 140 MB of outputs) stays out of this one's figures
            cpu, wall = _timed(cmd, env)
            rows[side].append((cpu, wall, root))
            print(f"pair {i + 1}: {side:<8} CPU {cpu:6.2f} s  wall {wall:6.2f} s", flush=True)
    same, psnr = compare_outputs(rows["dagster"][0][2], rows["plain"][0][2], story_id)
    for root in [r[2] for side in rows.values() for r in side]:
        shutil.rmtree(root, ignore_errors=True)
    best = {k: min(v, key=lambda r: r[0]) for k, v in rows.items()}
    print()
    print("| side | CPU (s) | wall (s) |")
    print("| --- | --- | --- |")
    for side in ("dagster", "plain"):
        print(f"| {side} | {best[side][0]:.2f} | {best[side][1]:.2f} |")
    print(f"scene outputs bit-identical: {same}; film PSNR {psnr:.1f} dB (the lossy delivery encode)")
    pairs = sorted(d[0] / p[0] for d, p in zip(rows["dagster"], rows["plain"]))
    print(f"per-pair ratios: {', '.join(f'{r:.2f}' for r in pairs)} (median {pairs[len(pairs) // 2]:.2f})")
    extra = [d[0] - p[0] for d, p in zip(rows["dagster"], rows["plain"])]
    print(
        f"orchestration CPU per render: {best['dagster'][0] - best['plain'][0]:.1f} s (min − min); "
        f"per pair: {', '.join(f'{x:.1f}' for x in extra)} s"
    )
    print(f"overhead ratio: {best['dagster'][0] / best['plain'][0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--plain-child":
        sys.path.insert(0, str(REPO))
        plain_loop(sys.argv[2], sys.argv[3])
    else:
        main()
