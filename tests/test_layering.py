"""Layering without circles (../shared/DESIGN.md, issue 9): the import graph of the project's own
modules — every ``import`` statement, module level or inside a function, each importing also the
packages above it — has no cycle; ``wan_pipeline`` never imports Dagster (but the CLI), ``assets``
or ``resources``; ``wan_pipeline.models`` never imports ``wan_pipeline.engines``; resolving a
model path never writes weights."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("wan_pipeline", "assets", "resources")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (with the packages that hold them)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                mod = ".".join(parts[:i])
                if mod in known and mod != name and not name.startswith(mod + "."):  # own packages are already importing
                    found.add(mod)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_anywhere():
    assert cycles(import_graph()) == []


def test_models_never_import_engines_and_the_library_never_imports_dagster_layers():
    graph = import_graph()
    bad = [(m, d) for m, deps in graph.items() if m.startswith("wan_pipeline.models") for d in deps if d.startswith("wan_pipeline.engines")]
    assert bad == []
    upward = [
        (m, d) for m, deps in graph.items() if m.startswith("wan_pipeline") for d in deps if d.split(".")[0] in ("assets", "resources")
    ]
    assert upward == [("wan_pipeline.cli", d) for m, d in upward]  # only the CLI shell calls the Dagster layer


@pytest.mark.parametrize("model", ["models/tiny/t2i", "models/tiny/rife/flownet.pkl"])
def test_resolving_a_model_path_never_writes_weights(tmp_path, monkeypatch, model):
    from wan_pipeline.engines.context import EngineContext
    from wan_pipeline.engines.diffusers_support import resolve_model_source
    from wan_pipeline.errors import InputError
    from wan_pipeline.storage import model_path

    monkeypatch.setenv("WAN_PIPELINE_STORAGE", str(tmp_path))
    assert model_path(model) == tmp_path / model
    ctx = EngineContext("p", None, "cpu", 64, 64, 16.0, tmp_path)
    assert ctx.model_path(model) == tmp_path / model
    if model.endswith("t2i"):
        with pytest.raises(InputError, match="make-tiny-models"):
            resolve_model_source(model)
    assert not (tmp_path / "models").exists()
