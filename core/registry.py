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
from polyrlm.specs import BackendSpec, Command, ExecutorSpec

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
#: The core's own batch executors (:mod:`polyrlm.batch`): name -> class.
CORE_EXECUTORS = {"serial": "SerialExecutor", "local": "LocalExecutor"}


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
        self._executors: dict[str, ExecutorSpec] = {
            name: ExecutorSpec(name, f"polyrlm.batch:{cls}", plugin="polyrlm")
            for name, cls in CORE_EXECUTORS.items()
        }
        collect(pm, pm.hook.register_backends, self._add)
        collect(pm, pm.hook.register_commands, self._add_command)
        collect(pm, pm.hook.register_executors, self._add_executor)

    def _add_executor(self, spec: ExecutorSpec, plugin: str) -> None:
        if spec.name in self._executors:
            first = self._executors[spec.name].plugin
            raise registered_twice("executor", spec.name, first, plugin)
        self._executors[spec.name] = ExecutorSpec(
            spec.name, spec.target, spec.requires, spec.extra, spec.description, plugin
        )

    def executors(self) -> dict[str, ExecutorSpec]:
        """Every executor by name (the core's ``serial`` and ``local`` too), sorted."""
        return dict(sorted(self._executors.items()))

    def executor(self, name: str) -> type[Any]:
        """The executor class of ``name``; imports it on first use."""
        spec = self._executors.get(name)
        if spec is None:
            known = ", ".join(self.executors())
            raise ConfigError(f"unknown executor {name!r}; executors: {known}")
        cls: type[Any] = _load(spec, "executor")
        return cls

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
        cls = _load(spec, "backend")
        if not (isinstance(cls, type) and issubclass(cls, Environment)):
            raise ConfigError(f"backend {name!r}: {spec.target} is not an Environment subclass")
        return cls


def _load(spec: BackendSpec, kind: str) -> Any:
    """What ``spec.target`` names, once its required modules are there."""
    missing = spec.missing()
    if missing:
        hint = f'pip install "polyrlm[{spec.extra}]"' if spec.extra else "install them"
        raise BackendUnavailable(
            f"{kind} {spec.name!r} needs {', '.join(missing)}, which is not installed: {hint}"
        )
    module_name, _, attr = spec.target.partition(":")
    try:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(
            f"{kind} {spec.name!r} failed to load {spec.target}: {exc}"
        ) from exc


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (built once, on first use)."""
    return Registry(plugin_manager())
