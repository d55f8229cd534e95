"""The layering of src/audiovae (DESIGN.md, "Target layout"): every import, function-local ones included, points to
the same or a lower layer, no import cycle, no module over MAX_LINES lines."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 600
# Module prefix (below audiovae) -> layer; the longest matching prefix wins. A module imports only from its own
# layer or lower ones.
LAYERS = {
    # the ground floor: errors, files, configs, audio I/O and its limiter, plots, corpus manifests and builders
    "errors": 0, "files": 0, "resources": 0, "config": 0, "audio": 0, "plots": 0, "data": 0, "limiter": 0,
    # the networks and what scores them
    "models": 1, "losses": 1, "metrics": 1,
    # named models and running them
    "registry": 2, "inference": 2,
    # the library: codec, classification, generation
    "codec": 3, "classify": 3, "generate": 3,
    # training (the train extra)
    "train": 4,
    # benchmarks, the web app, the demo and the report
    "bench": 5, "app": 5, "demo": 5, "report": 5,
    # the command line and the package's lazy facade (audiovae.load, audiovae.Codec, ...)
    "cli": 6, "__main__": 6, "": 6,
}


def modules() -> dict[str, Path]:
    """{dotted name: path} of every module under src/audiovae (a package by its name)."""
    out = {}
    for p in sorted((SRC / "audiovae").rglob("*.py")):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The audiovae modules that ``name`` imports anywhere in its body (a name imported from a package is that
    submodule when there is one, else the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("audiovae") and t != name:
                out.add(t)
    return out


def layer(name: str) -> int:
    rel = name.removeprefix("audiovae").removeprefix(".")
    key = max((k for k in LAYERS if rel == k or rel.startswith(k + ".") or k == ""), key=len)
    return LAYERS[key]


GRAPH = {name: imports(name, path, modules()) for name, path in modules().items()}


def test_every_module_has_a_layer():
    rel = [n.removeprefix("audiovae").removeprefix(".") for n in GRAPH]
    assert [n for n in rel if n and n.split(".")[0] not in LAYERS] == []


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name):
    assert [t for t in sorted(GRAPH[name]) if layer(t) > layer(name)] == [], f"{name} (layer {layer(name)})"


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for t in sorted(GRAPH[n]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n, [n])
    assert cycles == []


def test_no_module_over_max_lines():
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_the_checks_see_upward_and_cyclic_imports(tmp_path):
    src = tmp_path / "audiovae"
    (src / "models").mkdir(parents=True)
    (src / "__init__.py").write_text("")
    (src / "models" / "__init__.py").write_text("")
    (src / "models" / "vae.py").write_text("def f():\n    from audiovae import classify\n")
    (src / "classify.py").write_text("from .models import vae\n")
    known = {"audiovae": src / "__init__.py", "audiovae.models": src / "models" / "__init__.py",
             "audiovae.models.vae": src / "models" / "vae.py", "audiovae.classify": src / "classify.py"}
    assert imports("audiovae.models.vae", known["audiovae.models.vae"], known) == {"audiovae.classify"}
    assert imports("audiovae.classify", known["audiovae.classify"], known) == {"audiovae.models.vae"}
    assert layer("audiovae.classify") > layer("audiovae.models.vae")
