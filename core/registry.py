"""The registry: a pluggy plugin manager over the ``polyrlm`` hooks, and
the backends and commands that plugins register.

Plugins (built-in and third-party alike) load once, lazily, on first use,
all through the ``polyrlm`` entry-point group.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import pluggy

from polyrlm import hookspecs
from polyrlm.environment import Environment
from polyrlm.errors import BackendUnavailable, ConfigError, UnknownBackend
from polyrlm.specs import BackendSpec, Command

__all__ = [
    "CORE_COMMANDS",
    "BackendSpec",
    "Command",
    "Registry",
    "collect",
    "get_registry",
    "plugin_manager",
    "registered_twice",
]

#: Subcommands of the core CLI itself; a plugin may not register these names.
CORE_COMMANDS = ("run", "backends", "replay")


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every entry-point plugin loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    pm.check_pending()
    return pm


def collect(pm: pluggy.PluginManager, hook: Any, add: Callable[[Any, str], None]) -> None:
    """Call every implementation of a ``register_*`` hook with a
    ``register`` callback that knows which plugin is registering."""
    for impl in hook.get_hookimpls():
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

        def register(item: Any, _plugin: str = plugin_name) -> None:
            add(item, _plugin)

        impl.function(register=register)


def registered_twice(kind: str, name: str, first: str, plugin: str) -> ConfigError:
    return ConfigError(
        f"{kind} {name!r} is registered twice: by plugin {first!r} "
        f"and by plugin {plugin!r}; uninstall one of them"
    )


class Registry:
    """Backends (``register_backends``) and commands (``register_commands``)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._specs: dict[str, BackendSpec] = {}
        self._commands: dict[str, Command] = {}
        collect(pm, pm.hook.register_backends, self._add)
        collect(pm, pm.hook.register_commands, self._add_command)

    def _add(self, spec: BackendSpec, plugin: str) -> None:
        if spec.name in self._specs:
            raise registered_twice("backend", spec.name, self._specs[spec.name].plugin, plugin)
        self._specs[spec.name] = BackendSpec(
            spec.name, spec.target, spec.requires, spec.extra, spec.description, plugin
        )

    def _add_command(self, command: Command, plugin: str) -> None:
        if command.name in CORE_COMMANDS:
            raise ConfigError(
                f"plugin {plugin!r} registers the command {command.name!r}, which is polyrlm's own"
            )
        if command.name in self._commands:
            raise registered_twice(
                "command", command.name, self._commands[command.name].plugin, plugin
            )
        self._commands[command.name] = Command(command.name, command.help, command.main, plugin)

    def commands(self) -> dict[str, Command]:
        """Every command a plugin registered, by name, sorted."""
        return dict(sorted(self._commands.items()))

    def specs(self) -> dict[str, BackendSpec]:
        """Every registered backend by name, sorted."""
        return dict(sorted(self._specs.items()))

    def spec(self, name: str) -> BackendSpec:
        try:
            return self._specs[name]
        except KeyError:
            available = ", ".join(n for n, s in self.specs().items() if s.available) or "none"
            raise UnknownBackend(
                f"unknown backend {name!r}; available backends: {available} "
                f"(run `polyrlm backends` for the full list)"
            ) from None

    def get(self, name: str) -> type[Environment]:
        """The environment class of ``name``; imports it on first use."""
        spec = self.spec(name)
        missing = spec.missing()
        if missing:
            hint = f'pip install "polyrlm[{spec.extra}]"' if spec.extra else "install them"
            raise BackendUnavailable(
                f"backend {name!r} needs {', '.join(missing)}, which is not installed: {hint}"
            )
        module_name, _, attr = spec.target.partition(":")
        try:
            module = sys.modules.get(module_name) or importlib.import_module(module_name)
            cls = getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise BackendUnavailable(
                f"backend {name!r} failed to load {spec.target}: {exc}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Environment)):
            raise ConfigError(f"backend {name!r}: {spec.target} is not an Environment subclass")
        return cls


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (built once, on first use)."""
    return Registry(plugin_manager())
