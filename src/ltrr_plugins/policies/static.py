"""``static`` policy: the same allocation of the candidate budget for every query."""

from __future__ import annotations

from pydantic import Field

from ltrr.components import Params, PlanView, Policy, Problem
from ltrr.hookspecs import hookimpl
from ltrr.types import Action, PolicyContext


class StaticParams(Params):
    allocation: dict[str, int] = Field(default_factory=dict, description=(
        "Candidates per arm, e.g. {lexical: 60, memory: 40}. Empty: split the budget "
        "evenly over the arms."))


class StaticPolicy(Policy):
    """Fixed allocation of the candidate budget to arms (no learning)."""

    name = "static"
    Params = StaticParams

    @classmethod
    def check(cls, params: StaticParams, plan: PlanView) -> list[Problem]:
        problems = []
        for arm, k in params.allocation.items():
            if arm not in plan.arms:
                problems.append(Problem(f"allocation names '{arm}', which is not an arm",
                                        ("allocation", arm),
                                        hint=f"arms: {', '.join(plan.arms)}"))
            elif k <= 0:
                problems.append(Problem(f"allocation for '{arm}' must be positive, got {k}",
                                        ("allocation", arm), hint="remove the arm instead"))
            elif k > plan.arm_max_k.get(arm, k):
                problems.append(Problem(f"allocates {k} to '{arm}' but its max_k is "
                                        f"{plan.arm_max_k[arm]}", ("allocation", arm),
                                        hint=f"raise max_k of arm '{arm}'"))
        total = sum(params.allocation.values())
        if total > plan.budget:
            problems.append(Problem(f"allocation sums to {total}, more than the budget "
                                    f"{plan.budget}", ("allocation",),
                                    hint=f"lower the counts or raise policy.budget to {total}"))
        return problems

    def open(self) -> None:
        alloc = dict(self.params.allocation)
        if not alloc:
            arms = self.ctx.plan.arms
            share, extra = divmod(self.ctx.plan.budget, len(arms))
            alloc = {a: share + (1 if i < extra else 0) for i, a in enumerate(arms)}
            alloc = {a: k for a, k in alloc.items() if k > 0}
        self._action = Action(allocation=alloc, probability=1.0, pmf=[(alloc, 1.0)], index=0)

    def choose_batch(self, contexts: list[PolicyContext]) -> list[Action]:
        return [self._action] * len(contexts)


@hookimpl
def ltrr_components():
    return [StaticPolicy]
