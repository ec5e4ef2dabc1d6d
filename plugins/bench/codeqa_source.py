"""The installed standard library as a source tree, and what :mod:`ast` says
about its modules (for :mod:`polyrlm.plugins.bench.codeqa`)."""

from __future__ import annotations

import ast
import functools
import sysconfig
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EXCLUDED_DIRS",
    "Module",
    "header",
    "load_module",
    "overrides",
    "stdlib_files",
    "stdlib_root",
    "top_level_defs",
]

#: Folders of the library left out: tests, the IDE, vendored or third-party code,
#: and the generated codec tables of ``encodings``.
EXCLUDED_DIRS = frozenset(
    {
        "encodings",
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idlelib",
        "idle_test",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "__pycache__",
    }
)

_Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass(frozen=True)
class Module:
    """One module of the library: its dotted name, path, source and tree."""

    name: str
    path: str
    source: str
    tree: ast.Module


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@functools.cache
def stdlib_files() -> tuple[tuple[str, Path, int], ...]:
    """(module name, path, size in bytes) of every library module, by name."""
    root = stdlib_root()
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS & set(rel.parts[:-1]) or not all(p.isidentifier() for p in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not parts or not parts[-1].isidentifier():
            continue
        out.append((".".join(parts), path, path.stat().st_size))
    return tuple(sorted(out))


def load_module(name: str, path: Path) -> Module | None:
    """The module's source (decoded as Python decodes it) and tree; None when
    it cannot be read or parsed by this Python."""
    try:
        with tokenize.open(path) as f:
            source = f.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    return Module(name, path.relative_to(stdlib_root()).as_posix(), source, tree)


def header(module: Module) -> str:
    """The line that starts the module's section of the context."""
    return f"##### module {module.name} (file {module.path}) #####"


def _defs(node: ast.AST) -> Iterator[_Def]:
    # Module level means: anywhere outside a function or class body (inside
    # if / try / with blocks included), as pyclbr and help() see it.
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _Def):
            yield child
        elif not isinstance(child, ast.Lambda):
            yield from _defs(child)


def top_level_defs(
    tree: ast.Module, *, functions_only: bool = False, classes_only: bool = False
) -> list[str]:
    """Names of the functions and classes defined at module level (repeats kept)."""
    out = []
    for node in _defs(tree):
        is_class = isinstance(node, ast.ClassDef)
        if (functions_only and is_class) or (classes_only and not is_class):
            continue
        out.append(node.name)
    return out


def _members(cls: ast.ClassDef) -> set[str]:
    """Names bound directly in a class body: methods and plain assignments."""
    names = set()
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def overrides(tree: ast.Module) -> list[tuple[str, str, str]]:
    """(class, method, overridden class) for every method a class defines that
    the nearest class up its base chain also defines, where every class of
    that chain is defined once, directly at module level, with one base.
    Dunder methods are left out (``object`` defines most of them)."""
    classes: dict[str, list[ast.ClassDef]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes.setdefault(node.name, []).append(node)
    nested = [n.name for n in _defs(tree) if isinstance(n, ast.ClassDef)]
    once = {
        name: nodes[0]
        for name, nodes in classes.items()
        if len(nodes) == 1 and nested.count(name) == 1
    }
    found = []
    for name, cls in sorted(once.items()):
        chain: list[ast.ClassDef] = []
        current = cls
        while len(current.bases) == 1 and not current.keywords:
            base = current.bases[0]
            if not isinstance(base, ast.Name) or base.id not in once or base.id == name:
                break
            current = once[base.id]
            if current in chain:
                break
            chain.append(current)
        for method in sorted(
            n.name
            for n in cls.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and not (n.name.startswith("__") and n.name.endswith("__"))
        ):
            owner = next((c.name for c in chain if method in _members(c)), None)
            if owner is not None:
                found.append((name, method, owner))
    return found
