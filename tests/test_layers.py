"""The package is layered: every import inside stcorr points to the same or a lower layer, with no cycles.

Walks every module's source (module-level and function-level imports alike, so a lazy import cannot hide
a cycle) and checks it against the layer table of docs/architecture.md.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import stcorr

PACKAGE_DIR = Path(stcorr.__file__).parent

# Lowest first; a module belongs to the first layer with a prefix matching its dotted name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("stcorr._version", "stcorr.errors", "stcorr.device", "stcorr.checks", "stcorr.color",
              "stcorr._atomic", "stcorr._signals", "stcorr.distributed", "stcorr.paths", "stcorr.baseline_catalog",
              "stcorr.working_size", "stcorr.onednn")),
    ("weight files", ("stcorr.checkpoint", "stcorr.hub", "stcorr.manifest")),
    ("io", ("stcorr.io", "stcorr.frames", "stcorr.outputs", "stcorr.datasets")),
    ("features", ("stcorr.features", "stcorr.onnx_encoder")),
    ("propagation", ("stcorr.propagation",)),
    ("encoder", ("stcorr.encoder", "stcorr.efficientnet")),
    ("model", ("stcorr.model",)),
    ("weights loader", ("stcorr.baselines", "stcorr.loading")),
    ("metrics", ("stcorr.metrics",)),
    ("applications", ("stcorr.pipelines", "stcorr.eval", "stcorr.train", "stcorr.session_files", "stcorr.app",
                      "stcorr.video_jobs", "stcorr.batch_manifest", "stcorr.batch", "stcorr.integrations")),
    ("entry points", ("stcorr.cli", "stcorr.__main__", "stcorr")),
]


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes if prefix != "stcorr"):
            return index
    if module == "stcorr":
        return len(LAYERS) - 1
    raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to docs/architecture.md")


def _is_package(module: str) -> bool:
    return (PACKAGE_DIR.parent / module.replace(".", "/") / "__init__.py").is_file()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, known: set[str]) -> set[str]:
    """The stcorr modules ``module`` imports (``from pkg import submodule`` counts as the submodule)."""
    path = PACKAGE_DIR.parent / (module.replace(".", "/") + ("/__init__.py" if _is_package(module) else ".py"))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "stcorr")
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "stcorr":
                continue
            subs = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(target)
    return (found & known) - {module}


def test_every_module_is_in_a_layer():
    for name in module_names():
        layer_of(name)


def test_imports_point_down():
    known = set(module_names())
    upward = []
    for module in sorted(known):
        for imported in sorted(imports_of(module, known)):
            if layer_of(imported) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} "
                              f"({LAYERS[layer_of(imported)][0]})")
    assert not upward, "imports pointing up:\n" + "\n".join(upward)


def test_no_import_cycles():
    known = set(module_names())
    graph = {module: imports_of(module, known) for module in known}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_base_modules_import_only_base_modules():
    """device, checks, errors and colour need nothing from stcorr but errors."""
    known = set(module_names())
    assert imports_of("stcorr.errors", known) == set()
    # the device resolver raises DeviceError (listing this machine's devices) for a device that is not there
    for module in ("stcorr.device", "stcorr.checks", "stcorr.color"):
        assert imports_of(module, known) <= {"stcorr.errors"}


def test_io_layer_imports_no_model():
    known = set(module_names())
    io_modules = [m for m in known if layer_of(m) == 2]
    assert importlib.util.find_spec("stcorr.io") is not None
    for module in io_modules:
        assert all(layer_of(m) <= 2 for m in imports_of(module, known)), module


def test_annotation_formats_need_no_model():
    """The COCO RLE codec needs only errors; the COCO / YouTube-VIS converter only the I/O layer and below."""
    known = set(module_names())
    assert imports_of("stcorr.io.rle", known) == {"stcorr.errors"}
    assert all(layer_of(m) <= 2 for m in imports_of("stcorr.io.annotations", known))
