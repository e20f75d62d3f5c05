"""What OPE asks of a policy: its logged-style probabilities (``LoggedPmfPolicy``), the
actions it can play (``PlayableActionsPolicy``), its own rewards (``RewardingPolicy``)."""


from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable


if TYPE_CHECKING:
    import polars as pl


@runtime_checkable
class LoggedPmfPolicy(Protocol):
    """A policy that can score any logged context (the features it logged) for OPE."""

    def pmf_logged(self, features: dict, actions: list[dict[str, int]]) -> list[float]:
        """Probabilities of ``actions`` (allocations, in order) given logged ``features``
        (the decision's ``action_features``, ``{}`` when none were logged), as the policy
        would play them: its true probabilities, never renormalised over ``actions``.
        ``actions`` holds every allocation of the logged pmfs and of
        :meth:`PlayableActionsPolicy.playable_actions` when the policy has it, so the
        probabilities must sum to 1; put 0 on actions the policy cannot play."""
        ...


@runtime_checkable
class PlayableActionsPolicy(Protocol):
    """A :class:`LoggedPmfPolicy` that can list its actions (learning policies do).

    OPE adds them to the action space, so the policy's mass on allocations the logger
    never played is counted (``unsupported_mass``) and valued by DR's reward model
    instead of being lost.
    """

    def playable_actions(self) -> list[dict[str, int]]:
        """Every allocation the policy can play, in any context."""
        ...


@runtime_checkable
class RewardingPolicy(Protocol):
    """A policy that defines the reward it learns from (used by :func:`ope_report`)."""

    def rewards(self, interactions: "pl.DataFrame") -> "pl.DataFrame":
        """One row per decision: columns ``request_id`` and ``reward``."""
        ...
