"""The registry: built-ins through the hook, clear errors, duplicates refused."""

from __future__ import annotations

from collections.abc import Callable

import pluggy
import pytest

from polyrlm import hookspecs
from polyrlm.errors import BackendUnavailable, ConfigError, UnknownBackend
from polyrlm.registry import BackendSpec, Registry, get_registry, plugin_manager


class _Plugin:
    def __init__(self, *specs: BackendSpec) -> None:
        self.specs = specs

    @hookspecs.hookimpl
    def register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        for spec in self.specs:
            register(spec)


def registry_with(*plugins: object) -> Registry:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(__import__("polyrlm.backends.python", fromlist=["x"]), name="python")
    for number, plugin in enumerate(plugins):
        pm.register(plugin, name=f"third-party-{number}")
    pm.check_pending()
    return Registry(pm)


def test_builtin_backend_comes_through_the_entry_point() -> None:
    pm = plugin_manager()
    assert pm.get_plugin("python") is not None  # loaded from [project.entry-points.polyrlm]
    spec = get_registry().spec("python-inline")
    assert spec.plugin == "python" and spec.available
    assert get_registry().get("python-inline").name == "python-inline"


def test_unknown_backend_lists_the_available_ones() -> None:
    with pytest.raises(UnknownBackend, match=r"unknown backend 'pyhton'.*python-inline"):
        get_registry().get("pyhton")


def test_known_but_uninstalled_backend_names_its_extra() -> None:
    spec = BackendSpec(
        "quack", "quackdb_backend:Env", requires=("quackdb_not_here",), extra="quack"
    )
    registry = registry_with(_Plugin(spec))
    assert not registry.spec("quack").available
    with pytest.raises(BackendUnavailable, match=r'pip install "polyrlm\[quack\]"'):
        registry.get("quack")


def test_duplicate_names_are_refused() -> None:
    spec = BackendSpec("python-inline", "x:Y")
    with pytest.raises(ConfigError, match="registered twice"):
        registry_with(_Plugin(spec))


def test_third_party_backend_registers_and_loads() -> None:
    spec = BackendSpec("inline-copy", "polyrlm.backends.python.inline:InlinePythonEnvironment")
    registry = registry_with(_Plugin(spec))
    assert registry.get("inline-copy").language == "python"
    assert registry.specs()["inline-copy"].plugin == "third-party-0"


def test_target_that_is_not_an_environment_is_refused() -> None:
    registry = registry_with(_Plugin(BackendSpec("bogus", "polyrlm.config:SCHEMA_VERSION")))
    with pytest.raises(ConfigError, match="not an Environment"):
        registry.get("bogus")
