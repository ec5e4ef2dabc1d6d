"""The backend registry: a pluggy plugin manager over the ``polyrlm`` hooks.

Plugins (built-in and third-party alike) load once, lazily, on first use.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field

import pluggy

from polyrlm import hookspecs
from polyrlm.environment import Environment
from polyrlm.errors import BackendUnavailable, ConfigError, UnknownBackend

__all__ = ["BUILTIN_TASKS", "BackendSpec", "Registry", "get_registry", "plugin_manager"]

#: The module that registers the built-in benchmark tasks (``register_tasks``).
BUILTIN_TASKS = "polyrlm.bench.tasks"


@dataclass(frozen=True)
class BackendSpec:
    """How to find and load one backend, without importing it."""

    name: str
    #: ``"package.module:ClassName"`` of the :class:`Environment` subclass.
    target: str
    #: Top-level modules the backend needs (checked without importing them).
    requires: tuple[str, ...] = ()
    #: The ``polyrlm[...]`` extra that installs ``requires``.
    extra: str | None = None
    description: str = ""
    #: Filled in by the registry: which plugin registered it.
    plugin: str = field(default="", compare=False)

    def missing(self) -> list[str]:
        """Required modules that cannot be found."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    @property
    def available(self) -> bool:
        return not self.missing()


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every entry-point plugin loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    # The built-in benchmark tasks: a plugin like any other (register_tasks hook),
    # added here unless an entry point already loaded it.
    tasks = importlib.import_module(BUILTIN_TASKS)
    if not pm.is_registered(tasks):
        pm.register(tasks, name=BUILTIN_TASKS)
    pm.check_pending()
    return pm


class Registry:
    """Backends registered through ``register_backends``."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._specs: dict[str, BackendSpec] = {}
        for impl in pm.hook.register_backends.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

            def register(spec: BackendSpec, _plugin: str = plugin_name) -> None:
                self._add(spec, _plugin)

            impl.function(register=register)

    def _add(self, spec: BackendSpec, plugin: str) -> None:
        if spec.name in self._specs:
            first = self._specs[spec.name].plugin
            raise ConfigError(
                f"backend {spec.name!r} is registered twice: by plugin {first!r} "
                f"and by plugin {plugin!r}; uninstall one of them"
            )
        self._specs[spec.name] = BackendSpec(
            spec.name, spec.target, spec.requires, spec.extra, spec.description, plugin
        )

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
