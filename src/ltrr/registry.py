"""Component discovery: a pluggy manager over the ``ltrr`` entry-point group.

Built-in components and third-party ones load the same way. Set
``LTRR_DISABLE_PLUGINS=name,name`` to skip entry points, ``LTRR_TRACE=1`` to
print every hook call.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from ltrr import hookspecs
from ltrr.components import KIND_BASES, Component, Kind
from ltrr.errors import PluginError
from ltrr.simulate.model import UserModel

GROUP = "ltrr"


@dataclass(frozen=True)
class Registration:
    """One registered component and where it came from."""

    kind: Kind
    name: str
    cls: type[Component]
    plugin: str          # entry-point name (or plugin object name)
    package: str         # distribution providing it
    version: str

    @property
    def summary(self) -> str:
        return self.cls.summary()


@dataclass(frozen=True)
class UserModelRegistration:
    """One registered simulated-user model (``ltrr simulate``) and where it came from."""

    name: str
    cls: type[UserModel]
    plugin: str
    package: str
    version: str

    @property
    def summary(self) -> str:
        return self.cls.summary()


class Registry:
    """Registered components by kind and name, user models by name, the plugin manager."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._by_key: dict[tuple[Kind, str], Registration] = {}
        self.user_models: dict[str, UserModelRegistration] = {}

    def add(self, reg: Registration) -> None:
        key = (reg.kind, reg.name)
        other = self._by_key.get(key)
        if other is not None and other.cls is not reg.cls:
            raise PluginError(
                f"{reg.kind.value} '{reg.name}' is registered twice: by package "
                f"'{other.package}' (plugin '{other.plugin}') and by package "
                f"'{reg.package}' (plugin '{reg.plugin}')",
                hint="uninstall one of them, or disable one with LTRR_DISABLE_PLUGINS=<plugin>")
        self._by_key[key] = reg

    def all(self) -> list[Registration]:
        order = list(Kind)
        return sorted(self._by_key.values(), key=lambda r: (order.index(r.kind), r.name))

    def names(self, kind: Kind) -> list[str]:
        return sorted(name for (k, name) in self._by_key if k == kind)

    def find(self, kind: Kind, name: str) -> Registration | None:
        return self._by_key.get((kind, name))

    def other_kinds(self, name: str) -> list[Registration]:
        return [r for (k, n), r in self._by_key.items() if n == name]

    def closest(self, kind: Kind, name: str) -> str | None:
        match = difflib.get_close_matches(name, self.names(kind), n=1, cutoff=0.5)
        return match[0] if match else None


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("LTRR_TRACE"):
        pm.trace.root.setwriter(lambda s: sys.stderr.write(f"[ltrr trace] {s}"))
        pm.enable_tracing()
    return pm


def _impl(registry: Registry, hook: str, plugin: Any, plugin_name: str, package: str):
    """The plugin's @hookimpl function for ``hook``, or None."""
    impls = [i for i in getattr(registry.pm.hook, hook).get_hookimpls() if i.plugin is plugin]
    if not impls:
        if callable(getattr(plugin, hook, None)):
            raise PluginError(f"plugin '{plugin_name}' (package '{package}') defines "
                              f"{hook} without @hookimpl",
                              hint="decorate it with @ltrr.hookspecs.hookimpl")
        return None
    return impls[0].function


def _call(registry: Registry, hook: str, impl, plugin_name: str, package: str) -> list:
    registry.pm.trace(hook, f"plugin={plugin_name}", f"package={package}")
    try:
        return impl() or []
    except Exception as exc:
        raise PluginError(f"plugin '{plugin_name}' (package '{package}') failed in "
                          f"{hook}: {type(exc).__name__}: {exc}") from exc


def _collect(registry: Registry, plugin: Any, plugin_name: str, package: str, version: str):
    # Called per plugin (not through pm.hook) to know which package gave which class;
    # only functions marked @hookimpl count, as pluggy itself would decide.
    impl = _impl(registry, "ltrr_components", plugin, plugin_name, package)
    for cls in _call(registry, "ltrr_components", impl, plugin_name, package) if impl else []:
        kind = getattr(cls, "kind", None)
        if not (isinstance(cls, type) and issubclass(cls, Component) and kind in KIND_BASES):
            raise PluginError(f"plugin '{plugin_name}' (package '{package}') returned {cls!r}, "
                              "which is not a Slotter, Arm, Policy, Merger or Ranker subclass")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin_name}': component {cls.__name__} has no name")
        registry.add(Registration(kind, name, cls, plugin_name, package, version))
    impl = _impl(registry, "ltrr_user_models", plugin, plugin_name, package)
    for cls in _call(registry, "ltrr_user_models", impl, plugin_name, package) if impl else []:
        if not (isinstance(cls, type) and issubclass(cls, UserModel)):
            raise PluginError(f"plugin '{plugin_name}' (package '{package}') returned {cls!r} "
                              "from ltrr_user_models, which is not a UserModel subclass")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin_name}': user model {cls.__name__} has no name")
        other = registry.user_models.get(name)
        if other is not None and other.cls is not cls:
            raise PluginError(
                f"user model '{name}' is registered twice: by package '{other.package}' "
                f"(plugin '{other.plugin}') and by package '{package}' (plugin '{plugin_name}')",
                hint="uninstall one of them, or disable one with LTRR_DISABLE_PLUGINS=<plugin>")
        registry.user_models[name] = UserModelRegistration(name, cls, plugin_name, package,
                                                           version)


def build_registry(extra: list[tuple[str, Any]] | None = None) -> Registry:
    """Load every ``ltrr`` entry point (and ``extra`` plugin objects) into a registry."""
    pm = _plugin_manager()
    registry = Registry(pm)
    disabled = {s.strip() for s in os.environ.get("LTRR_DISABLE_PLUGINS", "").split(",") if s}
    for ep in entry_points(group=GROUP):
        if ep.name in disabled:
            continue
        dist = ep.dist
        package = dist.metadata["Name"] if dist else "?"
        version = dist.version if dist else "?"
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginError(f"cannot load plugin '{ep.name}' from package '{package}' "
                              f"({ep.value}): {type(exc).__name__}: {exc}",
                              hint=f"reinstall '{package}' or disable it with "
                                   f"LTRR_DISABLE_PLUGINS={ep.name}") from exc
        if pm.is_registered(module):
            continue
        pm.register(module, name=ep.name)
        _collect(registry, module, ep.name, package, version)
    for name, plugin in extra or []:
        pm.register(plugin, name=name)
        _collect(registry, plugin, name, "<in-process>", "-")
    return registry


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry of installed plugins (loaded once)."""
    return build_registry()
