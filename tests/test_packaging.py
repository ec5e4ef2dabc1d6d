"""Packaging: every backend folder ships, the package is typed."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_backend_and_plugin_folder_is_in_the_package_list() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(config["packages"])
    for top, name in (("backends", "polyrlm.backends"), ("plugins", "polyrlm.plugins")):
        for folder in (ROOT / top).iterdir():
            if (folder / "__init__.py").exists():
                assert f"{name}.{folder.name}" in packages, f"{folder} is not packaged"
    for folder in (ROOT / "core").iterdir():
        if (folder / "__init__.py").exists():
            assert f"polyrlm.{folder.name}" in packages, f"{folder} is not packaged"
    assert config["package-dir"] == {
        "polyrlm": "core",
        "polyrlm.backends": "backends",
        "polyrlm.plugins": "plugins",
    }


def test_installed_package_is_typed_and_has_entry_points() -> None:
    dist = importlib.metadata.distribution("polyrlm")
    groups = {ep.group for ep in dist.entry_points}
    assert {"polyrlm", "console_scripts", "pytest11"} <= groups
    import polyrlm

    assert (Path(polyrlm.__file__).parent / "py.typed").exists()


def test_public_api() -> None:
    import polyrlm

    for name in ("RLM", "Budget", "Result", "Usage", "Environment", "hookimpl"):
        assert name in polyrlm.__all__ and hasattr(polyrlm, name)


#: Modules that never run in the host (shipped as source into a kernel).
NOT_HOST_MODULES = {"polyrlm.backends.python.kernel_prelude"}

_IMPORT_ALL = """
import importlib, pkgutil, sys
import polyrlm, polyrlm.backends, polyrlm.plugins
skip = set(sys.argv[1:])
names = sorted(
    m.name
    for pkg in (polyrlm, polyrlm.backends, polyrlm.plugins)
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
    if m.name not in skip
)
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def _import_with_warnings_as_errors(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_module_imports_without_a_warning() -> None:
    """pytest's filters ignore pydantic's schema warnings (they are about
    litellm's types); ours are emitted at class definition, so importing every
    polyrlm module with warnings as errors keeps our own models clean."""
    done = _import_with_warnings_as_errors(_IMPORT_ALL, *NOT_HOST_MODULES)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 50


def test_the_import_check_catches_a_pydantic_warning_on_our_model() -> None:
    planted = "import pydantic\nclass M(pydantic.BaseModel):\n    schema_json: int = 0\n"
    done = _import_with_warnings_as_errors(planted)
    assert done.returncode != 0 and "shadows an attribute" in done.stderr


def test_every_plugin_folder_registers_through_an_entry_point() -> None:
    points = {
        ep.value
        for ep in importlib.metadata.distribution("polyrlm").entry_points
        if ep.group == "polyrlm"
    }
    folders = [f.name for f in (ROOT / "plugins").iterdir() if (f / "__init__.py").exists()]
    assert sorted(folders) == ["bench", "demo", "export", "jsonl", "mcp", "progress", "ray", "view"]
    for name in folders:
        assert f"polyrlm.plugins.{name}.plugin" in points, f"plugins/{name} has no entry point"
