"""The plugin hooks of ltrr — this module is the plugin reference.

A plugin is a module (or object) with functions decorated ``@hookimpl`` whose
names match the hooks below, exposed through an entry point in the group
``ltrr``::

    [project.entry-points.ltrr]
    my_plugin = "my_package.my_module"

The built-in components in ``plugins/`` register exactly this way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ltrr.components import Component
    from ltrr.simulate import UserModel
    from ltrr.types import Decision

hookspec = pluggy.HookspecMarker("ltrr")
hookimpl = pluggy.HookimplMarker("ltrr")


# --- registration -------------------------------------------------------------------

@hookspec
def ltrr_components() -> list[type[Component]]:
    """Return the component classes this plugin provides.

    Each class subclasses one of :class:`ltrr.components.Slotter`, ``Arm``,
    ``Policy``, ``Merger`` or ``Ranker``, sets ``name`` (what specs write after
    ``use:``) and ``Params`` (a pydantic model of its ``with:`` block). Names must
    be unique per kind across all installed plugins. All results are collected.

    Example::

        @hookimpl
        def ltrr_components():
            return [PopularityRanker]
    """


@hookspec
def ltrr_user_models() -> list[type[UserModel]]:
    """Return the simulated-user classes this plugin provides (``ltrr simulate``).

    Each class subclasses :class:`ltrr.simulate.UserModel`, sets ``name`` (what
    ``ltrr simulate --user-model`` names), ``Params`` (a pydantic model of its
    ``--with key=value`` options) and ``event_types``. Names must be unique across
    all installed plugins. All results are collected.

    Example::

        @hookimpl
        def ltrr_user_models():
            return [LastfmUsers]
    """


# --- runtime ------------------------------------------------------------------------

@hookspec
def ltrr_decision_made(decision: Decision) -> None:
    """Called once per query after ranking, before the decision is logged.

    Observers (metrics, auditing, streaming the decision elsewhere) hook here.
    Must be fast and must not modify ``decision``. Return values are ignored.

    Example::

        ARMS_USED = collections.Counter()

        @hookimpl
        def ltrr_decision_made(decision):
            ARMS_USED.update(decision.action.allocation)
    """
