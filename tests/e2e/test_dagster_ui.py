"""The Dagster UI as the studio, in a real browser.

A small copy of the demo story is rendered with the ``preview`` preset by ``wan-pipeline render``
into a temporary storage root (also the Dagster home, a copy of ``storage/dagster.yaml``); then
``dagster-webserver -w workspace.yaml`` and ``dagster-daemon run`` serve it on a free loopback
port, and headless Chromium (Debian's ``chromium``, driven by Playwright, no browser download)
reads the lineage, a partition's preview and telemetry, and materializes one partition.

The daemon, not a run coordinator that launches at once, runs the queue: that is what
``dagster dev`` does, so the test goes through the same queued-run + ``gpu`` pool path as a person
clicking Materialize.

The story is rendered twice: take ``draft`` (a smaller copy of the preset), then take ``preview``,
and the film's page shows both takes and plays the film's animated preview.

Screenshots land in the test's ``tmp_path``; with ``WAN_PIPELINE_SCREENSHOTS`` set (``1`` or a
folder) the lineage, partition, animated film and takes shots are also copied to
``docs/screenshots/`` (``make screenshots``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from wan_pipeline.telemetry import CONTRACT_KEYS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("WAN_PIPELINE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STORY = "launch_day"
SHEET_WIDTH = 3 * 128 + 4 * 4  # contact sheet of 128-px tiles (previews.SHEET_COLUMNS, SHEET_GAP)


def _why_skip() -> str | None:
    if not CHROMIUM.is_file():
        return (
            f"Chromium is not installed at {CHROMIUM} (Debian/Ubuntu: `apt-get install -y chromium`; .ci/run installs it when run as root)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` Python package is not installed (`pip install -e '.[dev]'`)"
    return None


if _why_skip():
    pytest.skip(_why_skip(), allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from tests.small_story import make_small_project  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


WORKSPACE_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"
RUNS_QUERY = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { ... on Runs { results { runId status assetSelection { path } } } } }"""


def _wait_loaded(url: str, procs: list, logs: list[Path], timeout: float = 150) -> None:
    """Poll ``workspaceOrError`` until the code location is LOADED (``/server_info`` answers earlier)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args[0]} exited with {p.returncode}:\n" + "\n".join(log.read_text()[-3000:] for log in logs))
        try:
            entries = _graphql(url, WORKSPACE_QUERY)["data"]["workspaceOrError"]["locationEntries"]
            last = entries
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
                assert not errors, errors
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"code location not loaded after {timeout}s: {last}\n" + "\n".join(log.read_text()[-3000:] for log in logs))


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """The rendered small story served by a webserver and a daemon: yields (url, env)."""
    folder = tmp_path_factory.mktemp("studio")
    env = {**os.environ, **make_small_project(folder, duration_s=0.5, width=128, height=80)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    story = Path(env["WAN_PIPELINE_STORIES"]) / f"{STORY}.yaml"
    # two takes side by side: first a smaller draft preset, then the story's own (`preview`, the latest)
    workflows = Path(env["WAN_PIPELINE_WORKFLOWS"])
    draft = {**yaml.safe_load((workflows / "preview.yaml").read_text()), "name": "draft", "width": 96, "height": 64}
    (workflows / "draft.yaml").write_text(yaml.safe_dump(draft, sort_keys=False))
    for take in ("draft", "preview"):
        render = subprocess.run(
            [sys.executable, "-m", "wan_pipeline.cli", "render", str(story), "--preset", take],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert render.returncode == 0, render.stderr[-3000:]
        film = Path(render.stdout.strip().splitlines()[-1])
        assert film.is_file() and film.parent.name == take

    bindir = Path(sys.executable).parent
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logs = [folder / "webserver.log", folder / "daemon.log"]
    commands = [
        [str(bindir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        [str(bindir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
    ]
    procs = []
    try:
        for cmd, log in zip(commands, logs):
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_loaded(url, procs, logs)
        yield url, env
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(page: Page, url: str) -> None:
    """Go to ``url`` and dismiss the 'Join the Dagster community' dialog of a first visit."""
    page.goto(url, wait_until="domcontentloaded")
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=6000)
        skip.click()
        expect(page.get_by_text("Join the Dagster community")).to_have_count(0)
    except Exception:
        pass  # not a first visit: no dialog


def _publish(shot: Path, name: str) -> None:
    target = os.environ.get("WAN_PIPELINE_SCREENSHOTS")
    if target:
        folder = ROOT / "docs" / "screenshots" if target in ("1", "true", "yes") else Path(target)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, folder / name)


def test_lineage_preview_and_telemetry(studio, browser, tmp_path):
    url, _ = studio
    page = browser.new_page(viewport={"width": 1920, "height": 640})
    try:
        _open(page, f"{url}/asset-groups/{STORY}")
        page.get_by_text("Hide navigation").click()  # more room for the graph
        for name in ("scene_spec", "keyframe", "clip", "interpolated", "upscaled", "film", "render_report"):
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30000)

        # the story's lineage around clip: keyframe ─► clip is the FLF2V handoff edge
        page.goto(f"{url}/assets/{STORY}/clip?view=lineage&lineageDepth=6", wait_until="domcontentloaded")
        expect(page.get_by_text("render_report", exact=True).first).to_be_visible(timeout=30000)
        page.mouse.move(940, 420)  # zoom in a little so that the cards show their details and kinds
        for _ in range(3):
            page.mouse.wheel(0, -60)
            page.wait_for_timeout(200)
        page.mouse.move(960, 300)  # and drag the graph up into the middle of the picture
        page.mouse.down()
        page.mouse.move(960, 170, steps=8)
        page.mouse.up()
        expect(page.get_by_text("4 partitions").first).to_be_visible(timeout=30000)
        for kind in ("video", "image", "opencv", "matplotlib"):
            expect(page.get_by_text(kind, exact=True).first).to_be_visible()
        page.wait_for_timeout(1000)
        lineage = tmp_path / "lineage.png"
        page.screenshot(path=lineage)
        _publish(lineage, "lineage.png")

        # clip, partition liftoff (hands off to commander): telemetry table and preview
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.goto(f"{url}/assets/{STORY}/clip?view=partitions", wait_until="domcontentloaded")
        page.get_by_text("liftoff", exact=True).first.click(timeout=30000)
        expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=30000)
        metadata = page.locator("table").filter(has_text="telemetry").first
        expect(metadata).to_be_visible()
        text = metadata.inner_text()
        for key in CONTRACT_KEYS:
            assert re.search(rf"(^|\s){key}(\s|$)", text), f"telemetry key {key!r} not on the page"
        assert "camera_motion" in text and "preview" in text and "handoff_to" in text
        assert re.search(r"/outputs/launch_day/preview/liftoff/clip\.mp4", text)  # the latest take: `preview`
        assert re.search(r"(^|\s)take\s+preview(\s|$)", text)

        page.get_by_text("[Show Markdown]").first.click()
        image = page.locator("img[src^='data:image/jpeg;base64,']").first
        expect(image).to_be_visible(timeout=10000)
        width = image.evaluate("img => img.complete ? img.naturalWidth : -1")
        assert width == SHEET_WIDTH, f"the preview decoded to {width} px wide, expected {SHEET_WIDTH}"
        page.wait_for_timeout(500)
        partition = tmp_path / "partition.png"
        page.screenshot(path=partition)
        _publish(partition, "partition.png")
        page.get_by_role("button", name="Close").click()
    finally:
        page.close()


def test_materialize_one_partition_from_the_ui(studio, browser, tmp_path):
    url, _ = studio
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, f"{url}/assets/{STORY}/clip?view=partitions")
        page.get_by_role("button", name="Materialize…").click(timeout=30000)
        dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        dialog.get_by_text("Select a partition or create one").click()
        page.get_by_text("commander", exact=True).locator("visible=true").last.click()
        dialog.get_by_text("Launch runs to materialize").click()  # close the partition picker
        launch = dialog.get_by_role("button", name="Launch 1 run")
        expect(launch).to_be_enabled()
        page.screenshot(path=tmp_path / "launch.png")
        launch.click()

        tags = [{"key": "dagster/partition", "value": "commander"}]
        deadline, runs = time.monotonic() + 150, []
        while time.monotonic() < deadline:
            runs = _graphql(url, RUNS_QUERY, {"tags": tags})["data"]["runsOrError"]["results"]
            if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            time.sleep(2)
        assert len(runs) == 1, runs
        run = runs[0]
        assert run["status"] == "SUCCESS", run
        assert run["assetSelection"] == [{"path": [STORY, "clip"]}]

        page.goto(f"{url}/runs/{run['runId']}", wait_until="domcontentloaded")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30000)
        page.screenshot(path=tmp_path / "run.png")

        page.goto(f"{url}/assets/{STORY}/clip?view=partitions", wait_until="domcontentloaded")
        page.get_by_text("commander", exact=True).first.click(timeout=30000)
        expect(page.get_by_text(run["runId"][:8]).first).to_be_visible(timeout=30000)
    finally:
        page.close()


FRAME_COUNT_JS = """async img => {
    const data = await (await fetch(img.src)).arrayBuffer();
    const mime = img.src.slice(5, img.src.indexOf(';'));
    const decoder = new ImageDecoder({data, type: mime});
    await decoder.tracks.ready;
    const track = decoder.tracks.selectedTrack;
    const last = await decoder.decode({frameIndex: track.frameCount - 1});
    return {frames: track.frameCount, animated: track.animated, width: last.image.displayWidth};
}"""


def test_film_plays_its_animated_preview_and_shows_both_takes(studio, browser, tmp_path):
    url, _ = studio
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        _open(page, f"{url}/assets/{STORY}/film")
        expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=30000)
        metadata = page.locator("table").filter(has_text="animation").first
        expect(metadata).to_be_visible(timeout=30000)
        text = metadata.inner_text()
        assert re.search(r"(^|\s)take\s+preview(\s|$)", text), "the film's take is not in its metadata"
        assert re.search(rf"/outputs/{STORY}/preview/film\.mp4", text)

        row = metadata.locator("tr").filter(has_text="animation").first
        row.get_by_text("[Show Markdown]").click()
        image = page.locator("img[src^='data:image/webp;base64,'], img[src^='data:image/gif;base64,']").first
        expect(image).to_be_visible(timeout=10000)
        decoded = image.evaluate(FRAME_COUNT_JS)
        # every scene: 4 scenes of 0.5 s at 8 preview frames/s, decoded by the browser itself
        assert decoded["animated"] and decoded["frames"] > 4, decoded
        assert 0 < decoded["width"] <= 480, decoded
        page.wait_for_timeout(800)  # a few frames in
        shot = tmp_path / "film-animation.png"
        page.screenshot(path=shot)
        _publish(shot, "film-animation.png")
        page.get_by_role("button", name="Close").click()

        # both takes: the story's runs, each tagged with its take
        page.goto(f"{url}/runs", wait_until="domcontentloaded")
        for take in ("preview", "draft"):
            expect(page.get_by_text(f"wan_pipeline/take: {take}").first).to_be_visible(timeout=30000)
        page.wait_for_timeout(500)
        shot = tmp_path / "takes.png"
        page.screenshot(path=shot)
        _publish(shot, "takes.png")
    finally:
        page.close()
