"""The device lock: two processes running stages (GPUResource.stage) at once never overlap."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import json, logging, sys, time
    from resources.gpu import GPUResource
    from wan_pipeline.engines import KeyframeRequest
    from wan_pipeline.engines.registry import build_engine
    from wan_pipeline.media import write_image
    from wan_pipeline.preset import load_preset
    root, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    preset = load_preset("preview")
    engine = build_engine("keyframe", preset.stages.keyframe, preset)
    gpu = GPUResource(storage_root=root)
    spans = []
    for i in range(n):
        with gpu.stage(logging.getLogger("t"), stage="keyframe", engine=engine, device="cpu", scene=f"s{i}", seed=i) as run:
            start = time.time()
            image = engine.render(KeyframeRequest("s", "p", "", i, 64, 48))
            time.sleep(0.15)
            run.output = write_image(f"{root}/{out}-{i}.png", image)
            end = time.time()
        spans.append((start, end, run.record["gpu_wait_s"]))
    json.dump(spans, open(f"{root}/{out}.json", "w"))
    """
)


def test_two_processes_never_overlap(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), f"w{i}", "4"]) for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    spans = sorted(tuple(s) for i in range(2) for s in json.loads((tmp_path / f"w{i}.json").read_text()))
    assert len(spans) == 8
    for (s1, e1, _), (s2, e2, _) in zip(spans, spans[1:]):
        assert s2 >= e1, f"overlap: {s1:.3f}-{e1:.3f} and {s2:.3f}-{e2:.3f}"
    assert max(w for _, _, w in spans) > 0.05  # somebody waited, and the telemetry says so (gpu_wait_s)
    from wan_pipeline.storage import machine_name

    assert (tmp_path / "locks" / machine_name() / "gpu-cpu.lock").exists()  # this machine's lock on the storage root


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    from wan_pipeline.device_lock import hold_device

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time\nfrom wan_pipeline.device_lock import hold_device\n"
            "with hold_device(sys.argv[1], 'cpu'):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with hold_device(tmp_path, "cpu", timeout_s=5) as waited:
        assert waited < 5
