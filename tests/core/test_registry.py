"""The registry: built-ins through the hook, clear errors, duplicates refused."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pluggy
import pytest

from polyrlm import hookspecs
from polyrlm.errors import BackendUnavailable, ConfigError, UnknownBackend
from polyrlm.registry import BackendSpec, Command, Registry, get_registry, plugin_manager


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


class _Commands:
    def __init__(self, *commands: Command) -> None:
        self.commands = commands

    @hookspecs.hookimpl
    def register_commands(self, register: Callable[[Command], None]) -> None:
        for command in self.commands:
            register(command)


def test_first_party_plugins_come_through_their_entry_points() -> None:
    pm = plugin_manager()
    for name in ("bench", "view", "demo", "progress", "jsonl", "ray", "mcp", "export"):
        plugin = pm.get_plugin(name)
        assert plugin is not None and plugin.__name__ == f"polyrlm.plugins.{name}.plugin"
    commands = get_registry().commands()
    assert {n: c.plugin for n, c in commands.items()} == {
        "bench": "bench",
        "demo": "demo",
        "export": "export",
        "mcp": "mcp",
        "view": "view",
    }
    assert {n: s.plugin for n, s in get_registry().executors().items()} == {
        "local": "polyrlm",
        "ray": "ray",
        "serial": "polyrlm",
    }


def test_a_third_party_command_runs_from_the_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from polyrlm.cli import main

    seen: list[list[str]] = []

    def hello(argv: Sequence[str]) -> int:
        seen.append(list(argv))
        return 7

    registry = Registry(plugin_manager())
    registry._add_command(Command("hello", "say hello", hello), "third-party")
    monkeypatch.setattr("polyrlm.registry.get_registry", lambda: registry)
    assert main(["hello", "--loud", "x"]) == 7 and seen == [["--loud", "x"]]
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    for name in ("run", "replay", "backends", "bench", "view", "demo", "hello"):
        assert f"    {name}" in listing


@pytest.mark.parametrize("name", ["run", "bench"])
def test_a_command_name_taken_is_refused(name: str) -> None:
    plugin = _Commands(Command(name, "mine", lambda argv: 0))
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(__import__("polyrlm.plugins.bench.plugin", fromlist=["x"]), name="bench")
    pm.register(plugin, name="third-party")
    with pytest.raises(ConfigError, match="polyrlm's own" if name == "run" else "registered twice"):
        Registry(pm)
