"""The layering of the package, checked on the source (every import statement, lazy ones included):

- the core library never imports the plugin world, the commands, the demo or the benchmarks;
- no two packages import each other (the package-level import graph has no cycle);
- importing every core module works with `t2v_turbo.worlds` and `t2v_turbo.commands` blocked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "t2v_turbo"
UPPER = ("worlds", "commands", "demo_app", "cli")  # layers above the core library
CORE_EXCLUDE = ("worlds", "commands", "demo_app", "cli.py", "assets", "configs")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (top-level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import x` imports a submodule
    return {m for m in found if m == "t2v_turbo" or m.startswith("t2v_turbo.")}


def _files():
    return sorted(p for p in SRC.rglob("*.py") if "assets" not in p.parts)


def _is_core(path: Path) -> bool:
    rel = path.relative_to(SRC)
    return rel.parts[0] not in CORE_EXCLUDE


def _unit(module: str) -> str | None:
    """The package-level unit of a module: `t2v_turbo.models.base` -> `models`; top-level modules
    (`t2v_turbo.sampling`) are their own unit."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1]


def test_core_never_imports_upper_layers():
    bad = []
    for path in filter(_is_core, _files()):
        for mod in _imports(path):
            unit = _unit(mod)
            if unit in UPPER:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_no_package_level_import_cycles():
    graph: dict[str, set[str]] = {}
    for path in _files():
        src = _unit(_module_name(path))
        for mod in _imports(path):
            dst = _unit(mod)
            if src and dst and dst != src and ((SRC / dst).is_dir() or (SRC / f"{dst}.py").exists()):
                graph.setdefault(src, set()).add(dst)
    # depth-first search for a cycle
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(" -> ".join(stack[stack.index(m) :] + [m]))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


CORE_PACKAGES = [
    "t2v_turbo.schedule",
    "t2v_turbo.solvers",
    "t2v_turbo.sampling",
    "t2v_turbo.losses",
    "t2v_turbo.distill",
    "t2v_turbo.train",
    "t2v_turbo.pipeline",
    "t2v_turbo.config",
    "t2v_turbo.models",
    "t2v_turbo.models.registry",
    "t2v_turbo.rewards",
    "t2v_turbo.data",
    "t2v_turbo.training",
    "t2v_turbo.evaluation",
]


@pytest.mark.parametrize("module", CORE_PACKAGES)
def test_core_imports_with_the_world_and_commands_blocked(module):
    code = (
        "import sys\n"
        "sys.modules['t2v_turbo.worlds'] = None\n"
        "sys.modules['t2v_turbo.commands'] = None\n"
        f"import {module}\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
