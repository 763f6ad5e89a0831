"""The layout of DESIGN.md: folders, layering (no Dagster in the engine library), console script."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_top_level_layout():
    for name in (
        "wan_pipeline",
        "assets",
        "resources",
        "workflows",
        "stories",
        "storage",
        "tests",
        "workspace.yaml",
        "pyproject.toml",
        "README.md",
    ):
        assert (REPO / name).exists(), name
    assert (REPO / "storage" / "dagster.yaml").is_file()


def test_engine_library_never_imports_dagster_outside_the_cli():
    offenders = []
    for path in (REPO / "wan_pipeline").rglob("*.py"):
        if path.name == "cli.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] in ("dagster", "assets", "resources") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_console_script_finds_this_projects_packages(tmp_path):
    """Run from an unrelated folder: the installed entry point must import our `assets` and
    `resources` (generic names that other packages could shadow)."""
    script = Path(sys.executable).with_name("wan-pipeline")
    code = "import assets.story_assets, resources.gpu, wan_pipeline.cli; print(assets.story_assets.__file__); print(resources.gpu.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(REPO / "assets" / "story_assets.py"), str(REPO / "resources" / "gpu.py")]
    res = subprocess.run([str(script), "validate", str(REPO / "stories" / "launch_day.yaml")], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and "launch_day" in res.stdout
