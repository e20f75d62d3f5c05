"""Component discovery: a pluggy manager over the ``ltrr`` entry-point group.

Built-in components and third-party ones load the same way, and every class a plugin
registers (components, user models) becomes one :class:`Registration` keyed by
(kind, name). Set ``LTRR_DISABLE_PLUGINS=name,name`` to skip entry points (not the
spec's defaults), ``LTRR_TRACE=1`` to print every hook call.
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
from ltrr.components import KIND_BASES, Component, Kind, Pluggable
from ltrr.errors import PluginError
from ltrr.simulate.model import UserModel

GROUP = "ltrr"


#: The kind under which user models (``ltrr simulate``) are registered.
USER_MODEL = "user_model"


@dataclass(frozen=True)
class Registration:
    """One registered class and where it came from: a component (``kind`` a
    :class:`Kind`) or a simulated-user model (``kind`` :data:`USER_MODEL`)."""

    kind: Kind | str
    name: str
    cls: type[Pluggable]
    plugin: str          # entry-point name (or plugin object name)
    package: str         # distribution providing it
    version: str

    @property
    def summary(self) -> str:
        return self.cls.summary()

    @property
    def noun(self) -> str:
        return "user model" if self.kind == USER_MODEL else Kind(self.kind).value


class Registry:
    """Registrations by (kind, name), and the plugin manager."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._by_key: dict[tuple[Kind | str, str], Registration] = {}

    def add(self, reg: Registration) -> None:
        key = (reg.kind, reg.name)
        other = self._by_key.get(key)
        if other is not None and other.cls is not reg.cls:
            raise PluginError(
                f"{reg.noun} '{reg.name}' is registered twice: by package "
                f"'{other.package}' (plugin '{other.plugin}') and by package "
                f"'{reg.package}' (plugin '{reg.plugin}')",
                hint="uninstall one of them, or disable one with LTRR_DISABLE_PLUGINS=<plugin>")
        self._by_key[key] = reg

    def all(self) -> list[Registration]:
        """The components, by kind (in query order) and name."""
        order = list(Kind)
        return sorted((r for r in self._by_key.values() if r.kind in order),
                      key=lambda r: (order.index(r.kind), r.name))

    @property
    def user_models(self) -> dict[str, Registration]:
        """The user models by name."""
        return {n: r for (k, n), r in sorted(self._by_key.items()) if k == USER_MODEL}

    def names(self, kind: Kind | str) -> list[str]:
        return sorted(name for (k, name) in self._by_key if k == kind)

    def find(self, kind: Kind | str, name: str) -> Registration | None:
        return self._by_key.get((kind, name))

    def other_kinds(self, name: str) -> list[Registration]:
        """The components (not user models) named ``name``, whatever their kind."""
        return [r for (k, n), r in self._by_key.items() if n == name and k != USER_MODEL]

    def closest(self, kind: Kind | str, name: str) -> str | None:
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


def _kind_of(hook: str, cls: Any) -> Kind | str | None:
    """The kind ``cls`` registers as through ``hook``; None if it is not a valid class."""
    if not isinstance(cls, type):
        return None
    if hook == "ltrr_user_models":
        return USER_MODEL if issubclass(cls, UserModel) else None
    kind = getattr(cls, "kind", None)
    return kind if issubclass(cls, Component) and kind in KIND_BASES else None


#: Each registering hook and what its classes must be.
_HOOKS = {"ltrr_components": "a Slotter, Arm, Policy, Merger or Ranker subclass",
          "ltrr_user_models": "a UserModel subclass"}


def _collect(registry: Registry, plugin: Any, plugin_name: str, package: str, version: str):
    # Called per plugin (not through pm.hook) to know which package gave which class;
    # only functions marked @hookimpl count, as pluggy itself would decide.
    for hook, expected in _HOOKS.items():
        impl = _impl(registry, hook, plugin, plugin_name, package)
        for cls in _call(registry, hook, impl, plugin_name, package) if impl else []:
            kind = _kind_of(hook, cls)
            if kind is None:
                raise PluginError(f"plugin '{plugin_name}' (package '{package}') returned "
                                  f"{cls!r} from {hook}, which is not {expected}")
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin '{plugin_name}': {cls.__name__} has no name")
            registry.add(Registration(kind, name, cls, plugin_name, package, version))


def _check_defaults(registry: Registry, disabled: set[str]) -> None:
    """The components a spec uses when it names none are always there."""
    from ltrr.spec.models import MergeSpec, PolicySpec, RankerSpec

    for kind, model in ((Kind.POLICY, PolicySpec), (Kind.MERGER, MergeSpec),
                        (Kind.RANKER, RankerSpec)):
        name = model.model_fields["use"].default
        if registry.find(kind, name) is None:
            why = (f"LTRR_DISABLE_PLUGINS names '{name}'" if name in disabled
                   else "no installed package registers it")
            raise PluginError(f"the default {kind.value} '{name}' (what a spec without "
                              f"'use:' there runs) is missing: {why}",
                              hint=f"remove '{name}' from LTRR_DISABLE_PLUGINS" if
                              name in disabled else "reinstall ltrr")


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
    _check_defaults(registry, disabled)
    return registry


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry of installed plugins (loaded once)."""
    return build_registry()
