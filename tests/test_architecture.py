"""The layering, read from the code's own imports (plain ``ast``, every
import counted: top level, inside functions, under ``TYPE_CHECKING``):

* the core (``core/`` -> ``polyrlm``) imports no backend and no plugin;
* a backend (``backends/`` -> ``polyrlm.backends``) imports no plugin;
* no module reaches itself again through its imports (no import circle).

Plugins and backends reach the core through its modules; the core finds
them only through the registry (entry points and hooks).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Source folder -> the package it installs as (pyproject's package-dir).
FOLDERS = {"core": "polyrlm", "backends": "polyrlm.backends", "plugins": "polyrlm.plugins"}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the tree under ``root``, by its import name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _target(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is, or lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The polyrlm modules ``module`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from polyrlm import hookspecs` imports the module polyrlm.hookspecs
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            target = _target(name, known) if name.startswith("polyrlm") else None
            if target is not None and target != module:
                out.add(target)
    return out


def _layer(module: str) -> str:
    if module.startswith("polyrlm.backends"):
        return "backend"
    if module.startswith("polyrlm.plugins"):
        return "plugin"
    return "core"


#: Which layers may not import which.
FORBIDDEN = {("core", "backend"), ("core", "plugin"), ("backend", "plugin")}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected groups of two or more modules
    (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def violations(root: Path) -> list[str]:
    """Every broken rule in the tree under ``root``, one line each."""
    known = modules(root)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    found = [
        f"{_layer(a)} module {a} imports {_layer(b)} module {b}"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if (_layer(a), _layer(b)) in FORBIDDEN
    ]
    found += sorted(f"import circle: {' <-> '.join(group)}" for group in circles(graph))
    return found


def test_the_tree_keeps_its_layers_and_has_no_import_circle() -> None:
    known = modules(ROOT)
    assert len(known) > 100 and "polyrlm.loop" in known and "polyrlm.plugins.bench.task" in known
    assert violations(ROOT) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_planted_violation_of_each_rule_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/loop.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from polyrlm.plugins.view.page import write_html\n",
            "core/a.py": "def f():\n    from polyrlm import b\n",
            "core/b.py": "import polyrlm.c\n",
            "core/c.py": "from .a import f\n",
            "core/ok.py": "import importlib\nimportlib.import_module('polyrlm.a')\n",
            "backends/__init__.py": "",
            "backends/bash/__init__.py": "",
            "backends/bash/env.py": "from . import sandbox\n",
            "backends/bash/sandbox.py": "from polyrlm.backends.bash.env import X\n"
            "import polyrlm.plugins.view\n",
            "plugins/__init__.py": "",
            "plugins/view/__init__.py": "",
            "plugins/view/page.py": "from polyrlm.loop import run\nfrom polyrlm import RLM\n",
        },
    )
    assert violations(root) == [
        "backend module polyrlm.backends.bash.sandbox imports plugin module polyrlm.plugins.view",
        "core module polyrlm.loop imports plugin module polyrlm.plugins.view.page",
        "import circle: polyrlm.a <-> polyrlm.b <-> polyrlm.c",
        "import circle: polyrlm.backends.bash.env <-> polyrlm.backends.bash.sandbox",
        "import circle: polyrlm.loop <-> polyrlm.plugins.view.page",
    ]
