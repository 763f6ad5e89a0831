"""The device lock: two processes running stages at once never overlap."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from wan_pipeline.device_lock import hold_device
    lock_dir, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spans = []
    for _ in range(n):
        with hold_device(lock_dir, "cuda:0") as waited:
            start = time.time()
            time.sleep(0.15)
            spans.append((start, time.time(), waited))
    json.dump(spans, open(out, "w"))
    """
)


def test_two_processes_never_overlap(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "locks"), str(tmp_path / f"{i}.json"), "4"]) for i in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    spans = sorted(tuple(s) for i in range(2) for s in json.loads((tmp_path / f"{i}.json").read_text()))
    assert len(spans) == 8
    for (s1, e1, _), (s2, e2, _) in zip(spans, spans[1:]):
        assert s2 >= e1, f"overlap: {s1:.3f}-{e1:.3f} and {s2:.3f}-{e2:.3f}"
    assert max(w for _, _, w in spans) > 0.05  # somebody had to wait
    assert (tmp_path / "locks" / "gpu-0.lock").exists()


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    from wan_pipeline.device_lock import hold_device

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time\nfrom wan_pipeline.device_lock import hold_device\n"
         "with hold_device(sys.argv[1], 'cpu'):\n    print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with hold_device(tmp_path, "cpu", timeout_s=5) as waited:
        assert waited < 5
