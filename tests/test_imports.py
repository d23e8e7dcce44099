"""The package's layers: light to import, no import circle, imports only go down a layer, and
Ray only under ``execution/``. Every ``import`` counts, also those inside functions."""

import ast
import subprocess
import sys
from pathlib import Path

import deepfake_lib

PACKAGE = Path(deepfake_lib.__file__).parent
# bottom to top: a module imports from its own layer or lower ones
LAYERS = ("core", "media", "data", "models", "execution", "stages", "report", "pipeline", "cli")
DOMAIN = ("core", "media", "data", "models")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    """``{module: deepfake_lib modules it imports}`` over every module of the package."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    # packages import their modules (``__init__``); an edge into a package is an edge to it
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):]
                                                                    + [nxt]) if nxt in path
                                     else f"import cycle through {nxt}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_imports_only_go_down_a_layer():
    climbing = [f"{m} imports {n}" for m, deps in _graph().items() for n in deps
                if _layer(m) and _layer(n)
                and LAYERS.index(_layer(n)) > LAYERS.index(_layer(m))]
    assert climbing == []
    domain_to_execution = [f"{m} imports {n}" for m, deps in _graph().items() for n in deps
                           if _layer(m) in DOMAIN and _layer(n) == "execution"]
    assert domain_to_execution == []


def test_ray_is_imported_only_under_execution():
    outside = [_module_name(p) for p in PACKAGE.rglob("*.py")
               if not p.relative_to(PACKAGE).parts[0] == "execution"
               and any(m == "ray" or m.startswith("ray.") for m in _imports(p))]
    assert outside == []


def test_the_stage_registry_lists_the_five_stages_in_order():
    from deepfake_lib.stages import STAGES

    assert [s.name for s in STAGES] == ["encode", "cluster", "prepare", "train", "score"]
    for s in STAGES:
        assert s.run.__module__.startswith("deepfake_lib.stages.")
        assert s.writes and all(isinstance(what, str) for _, what in s.writes)


def test_importing_the_package_loads_no_model_and_starts_no_ray():
    code = ("import sys, pkgutil, importlib, deepfake_lib\n"
            "for m in pkgutil.walk_packages(deepfake_lib.__path__, 'deepfake_lib.'):\n"
            "    importlib.import_module(m.name)\n"
            "heavy = [m for m in ('torch', 'ray', 'face_recognition', 'facenet_pytorch', 'dlib',"
            " 'segmentation_models_pytorch', 'timm') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
