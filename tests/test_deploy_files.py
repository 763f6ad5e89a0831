"""The scale-out files under deploy/ are checked without Docker or a cluster: the Dockerfile's
instructions (a small linter: known instructions, pinned base image, sources that exist, exec-form
CMD naming the real code location, no root user, apt lists cleaned), the Kubernetes YAML (yamllint
when installed, then what the README promises: a GPU limit, a GPU node selector, one shared volume
that every reference names, the PostgreSQL URL from the variable the code reads)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from wan_pipeline.storage import DATABASE_URL_ENV

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG"}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word, rest.strip()))
            pending = ""
    assert not pending, f"{path}: a continuation line at the end"
    return out


def lint_dockerfile(path: Path) -> list[str]:
    problems = []
    steps = dockerfile_instructions(path)
    problems += [f"unknown instruction {w}" for w, _ in steps if w not in INSTRUCTIONS]
    if not steps or steps[0][0] not in ("FROM", "ARG"):
        problems.append("the first instruction must be FROM")
    for word, args in steps:
        if word == "FROM":
            image = args.split()[0]
            if ":" not in image or image.endswith(":latest"):
                problems.append(f"base image {image} is not pinned to a tag")
        if word in ("COPY", "ADD"):
            for src in shlex.split(args)[:-1]:
                if not src.startswith("--") and not (ROOT / src).exists():
                    problems.append(f"{word} source {src} does not exist")
        if word == "RUN" and "apt-get install" in args:
            if "--no-install-recommends" not in args or "rm -rf /var/lib/apt/lists" not in args:
                problems.append("apt-get install without --no-install-recommends and a cleaned list cache")
        if word in ("CMD", "ENTRYPOINT"):
            try:
                json.loads(args)
            except ValueError:
                problems.append(f"{word} is not in exec form (a JSON array)")
    users = [a for w, a in steps if w == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append("the image runs as root")
    return problems


def test_dockerfile_lints_clean_and_serves_the_code_location():
    path = DEPLOY / "Dockerfile"
    assert lint_dockerfile(path) == []
    cmd = json.loads(next(a for w, a in dockerfile_instructions(path) if w == "CMD"))
    module = cmd[cmd.index("--module-name") + 1]
    attribute = cmd[cmd.index("--attribute") + 1]
    assert (ROOT / (module.replace(".", "/") + ".py")).read_text().count(f"\n{attribute} = ") == 1


def test_the_dockerfile_linter_finds_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install -y ffmpeg\nCOPY nowhere /x\nFROBNICATE\nCMD dagster dev\n")
    problems = lint_dockerfile(bad)
    assert len(problems) == 6, problems  # unpinned, apt, missing source, unknown instruction, shell CMD, root


def test_kubernetes_files_lint_and_agree():
    files = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert {f.name for f in files} == {"dagster.yaml", "code-location.yaml", "step-pod.yaml"}
    try:
        from yamllint import linter
        from yamllint.config import YamlLintConfig
    except ImportError:
        linter = None
    if linter is not None:
        conf = YamlLintConfig(file=str(DEPLOY / ".yamllint"))
        for f in files:
            assert [str(p) for p in linter.run(f.read_text(), conf)] == [], f
    instance = yaml.safe_load((DEPLOY / "k8s" / "dagster.yaml").read_text())
    objects = list(yaml.safe_load_all((DEPLOY / "k8s" / "code-location.yaml").read_text()))
    step = yaml.safe_load((DEPLOY / "k8s" / "step-pod.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_url"] == {"env": DATABASE_URL_ENV}
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    assert {v["persistentVolumeClaim"]["claimName"] for v in instance["run_launcher"]["config"]["volumes"]} == claims
    assert [o["spec"]["accessModes"] for o in objects if o["kind"] == "PersistentVolumeClaim"] == [["ReadWriteMany"]]
    config_maps = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    assert set(instance["run_launcher"]["config"]["env_config_maps"]) <= config_maps
    assert step["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert step["pod_spec_config"]["nodeSelector"]


@pytest.mark.parametrize("name", ["dagster.yaml"])
def test_the_instance_template_is_valid_yaml(name):
    assert yaml.safe_load((ROOT / "storage" / name).read_text())["concurrency"]["pools"]["default_limit"] >= 1
