"""``uniform`` policy: every allocation of the action space equally likely.

The exploration baseline and the natural logging policy for off-policy learning:
its decisions carry the full pmf and the context features, so ``ltrr train`` can
teach another policy from them. It learns nothing itself beyond the shared user
history and arm yields (which it logs as features).
"""

from __future__ import annotations

from ltrr.hookspecs import hookimpl
from ltrr_plugins.policies.base import BanditParams, BanditPolicy
from ltrr_plugins.policies.features import Namespaces


class UniformParams(BanditParams):
    """Params of the uniform policy (action space, features, seed)."""


class UniformPolicy(BanditPolicy):
    """Random allocation of the budget, uniform over the action space (seeded)."""

    name = "uniform"
    Params = UniformParams

    def _pmfs(self, feats: list[Namespaces]) -> list[list[float]]:
        n = len(self.space)
        return [[1.0 / n] * n for _ in feats]


@hookimpl
def ltrr_components():
    return [UniformPolicy]
