"""Packaging: every backend folder ships, the package is typed."""

from __future__ import annotations

import importlib.metadata
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
