"""``epsilon_greedy`` policy: a small pure-Python contextual bandit baseline.

Keeps, per context key (the query's features, see
:func:`ltrr_plugins.policies.features.context_key`) and action, the count and sum of
rewards. The estimate of an action in a context is shrunk toward the action's mean
over all contexts (``prior_weight`` pseudo-observations), so a new context starts
from what is known in general. With probability ``1 - epsilon`` it plays the best
estimate (ties: the first action), otherwise a uniform action.
"""

from __future__ import annotations

from pydantic import Field

from ltrr.components import Problem
from ltrr.hookspecs import hookimpl
from ltrr_plugins.policies.base import BanditParams, BanditPolicy
from ltrr_plugins.policies.features import Namespaces, context_key


class EpsilonGreedyParams(BanditParams):
    """Params of the epsilon-greedy policy."""

    epsilon: float = Field(0.1, ge=0, le=1, description=(
        "Probability of a uniform random action instead of the best estimate."))
    prior_weight: float = Field(1.0, ge=0, description=(
        "Pseudo-observations of the action's all-context mean added to each context's "
        "estimate (0: contexts learn independently)."))
    initial: float = Field(0.0, description=(
        "Estimated reward of an action never tried anywhere (raise it to explore "
        "optimistically)."))


ALL = "*"   # context keys are never "*": they are empty or hold "group.feature"


def _key(ns: Namespaces) -> str:
    return context_key({g: f for g, f in ns.items() if g != "yield"})


class EpsilonGreedyPolicy(BanditPolicy):
    """Per-context mean reward of each allocation, epsilon-greedy (pure Python)."""

    name = "epsilon_greedy"
    Params = EpsilonGreedyParams

    @classmethod
    def check(cls, params, plan):
        problems = super().check(params, plan)
        for group in ("text", "evidence"):
            if group in params.features:
                problems.append(Problem(
                    f"the {group} group makes nearly every query a context of its own for "
                    f"this tabular policy: it would learn almost nothing", ("features",),
                    hint=f"use the vw policy, which generalises, or drop {group}"))
        return problems

    def _init_model(self) -> None:
        # context key → action key → [count, reward sum]; ALL holds the all-context totals
        self.table: dict[str, dict[str, list[float]]] = {}

    def _restore(self, model: dict) -> None:
        self.table = {c: {a: [float(n), float(s)] for a, (n, s) in row.items()}
                      for c, row in model.get("table", {}).items()}

    def _persist(self) -> dict:
        return {"table": self.table}

    def estimates(self, ns: Namespaces) -> list[float]:
        """Estimated reward of every action in the context ``ns``."""
        row = self.table.get(_key(ns), {})
        total = self.table.get(ALL, {})
        m, init = self.params.prior_weight, self.params.initial
        out = []
        for k in self.space.keys:
            gn, gs = total.get(k, (0.0, 0.0))
            g = gs / gn if gn else init
            n, s = row.get(k, (0.0, 0.0))
            out.append((s + m * g) / (n + m) if n + m > 0 else g)
        return out

    def _pmfs(self, feats: list[Namespaces]) -> list[list[float]]:
        n = len(self.space)
        eps = self.params.epsilon
        out = []
        for ns in feats:
            q = self.estimates(ns)
            best = max(range(n), key=q.__getitem__)
            pmf = [eps / n] * n
            pmf[best] += 1.0 - eps
            out.append(pmf)
        return out

    def _learn(self, examples) -> None:
        keys = self.space.keys
        for ns, i, _p, r in examples:
            for c in (_key(ns), ALL):
                cell = self.table.setdefault(c, {}).setdefault(keys[i], [0.0, 0.0])
                cell[0] += 1.0
                cell[1] += r


@hookimpl
def ltrr_components():
    return [EpsilonGreedyPolicy]
