"""The action space of a learning policy: every allocation of the budget over arms.

An action is ``dict[arm_id, int]`` summing to the policy budget, each chosen arm
getting a positive multiple of ``step``. Logged actions are matched to the space by
their canonical key, :func:`ltrr.types.action_key`, so a changed space still recognises old
decisions that are in it.
"""

from __future__ import annotations


from pydantic import Field

from ltrr.components import Params, PlanView, Problem
from ltrr.types import action_key


class SpaceParams(Params):
    """Params shared by the learning policies: how the action space is enumerated."""

    step: int | None = Field(None, gt=0, description=(
        "Granularity of allocations in candidates; must divide policy.budget. Default: the "
        "smallest divisor of the budget that splits it into at most 4 steps."))
    max_arms: int | None = Field(None, gt=0, description=(
        "Most arms one action may use (including `always` arms). Default: no limit."))
    always: list[str] = Field(default_factory=list, description=(
        "Arms present in every action (with at least one step)."))
    arms: list[str] | None = Field(None, description=(
        "Arms the policy allocates over (default: every arm of the pipeline)."))
    max_actions: int = Field(500, gt=0, description=(
        "Upper bound on the number of actions; a larger space is a compile error (each "
        "decision scores every action)."))


def default_step(budget: int) -> int:
    """The smallest divisor of ``budget`` that splits it into at most 4 steps."""
    return next(d for d in range(1, budget + 1) if budget % d == 0 and budget // d <= 4)


class ActionSpace:
    """All allocations of ``budget`` over ``arms`` in multiples of ``step``.

    ``actions`` is ordered deterministically (arm order of the spec, larger shares of
    earlier arms first); ``index_of(key)`` finds an action by :func:`action_key`.
    """

    def __init__(self, arms: list[str], budget: int, step: int, max_arms: int | None = None,
                 always: list[str] | None = None, arm_max_k: dict[str, int] | None = None):
        self.arms = list(arms)
        self.budget = budget
        self.step = step
        self.max_arms = max_arms
        self.always = list(always or [])
        self.arm_max_k = dict(arm_max_k or {})
        self.actions: list[dict[str, int]] = list(self._enumerate())
        self.keys: list[str] = [action_key(a) for a in self.actions]
        self._index = {k: i for i, k in enumerate(self.keys)}

    @classmethod
    def from_params(cls, params: SpaceParams, plan: PlanView) -> "ActionSpace":
        """The space a policy's params describe (assumes :func:`check_space` passed)."""
        arms = [a for a in plan.arms if params.arms is None or a in params.arms]
        step = params.step or default_step(plan.budget)
        return cls(arms, plan.budget, step, params.max_arms, params.always, plan.arm_max_k)

    def __len__(self) -> int:
        return len(self.actions)

    def index_of(self, key: str) -> int | None:
        return self._index.get(key)

    def _enumerate(self):
        units = self.budget // self.step
        limit = self.max_arms or len(self.arms)
        cap = [min(units, self.arm_max_k.get(a, self.budget) // self.step) for a in self.arms]
        must = [a in self.always for a in self.arms]
        n = len(self.arms)

        def rec(i: int, left: int, used: int, chosen: list[tuple[str, int]]):
            if i == n:
                if left == 0:
                    yield dict(chosen)
                return
            # remaining arms that must still get at least one step
            need = sum(1 for j in range(i + 1, n) if must[j])
            for u in range(min(left, cap[i]), -1, -1):
                if u == 0 and must[i]:
                    continue
                if u > 0 and used + 1 > limit:
                    continue
                if left - u < need:
                    continue
                if u:
                    chosen.append((self.arms[i], u * self.step))
                yield from rec(i + 1, left - u, used + (u > 0), chosen)
                if u:
                    chosen.pop()

        yield from rec(0, units, 0, [])


def check_space(params: SpaceParams, plan: PlanView) -> list[Problem]:
    """Compile-time problems of a policy's action-space params."""
    problems: list[Problem] = []
    for field in ("arms", "always"):
        for i, arm in enumerate(getattr(params, field) or []):
            if arm not in plan.arms:
                problems.append(Problem(f"'{arm}' is not an arm of this pipeline", (field, i),
                                        hint=f"arms: {', '.join(plan.arms)}"))
    if params.arms is not None and not params.arms:
        problems.append(Problem("lists no arms", ("arms",),
                                hint="name at least one arm, or remove the field for all"))
    if params.arms is not None:
        for i, arm in enumerate(params.always):
            if arm in plan.arms and arm not in params.arms:
                problems.append(Problem(f"'{arm}' must always run but is not in 'arms'",
                                        ("always", i), hint=f"add '{arm}' to arms"))
    if params.step is not None and plan.budget % params.step:
        divisors = [d for d in range(1, plan.budget + 1) if plan.budget % d == 0]
        near = sorted(divisors, key=lambda d: (abs(d - params.step), d))[:3]
        problems.append(Problem(f"step {params.step} does not divide the budget "
                                f"{plan.budget}", ("step",),
                                hint=f"use a divisor of {plan.budget}, e.g. "
                                     + ", ".join(map(str, sorted(near)))))
    if params.max_arms is not None and len(params.always) > params.max_arms:
        problems.append(Problem(f"{len(params.always)} arms must always run but max_arms is "
                                f"{params.max_arms}", ("max_arms",),
                                hint=f"raise max_arms to {len(params.always)}"))
    if problems:
        return problems
    space = ActionSpace.from_params(params, plan)
    if not space.actions:
        problems.append(Problem("the action space is empty: no allocation of the budget "
                                f"{plan.budget} in steps of {space.step} satisfies "
                                "max_arms, always and the arms' max_k", ("step",),
                                hint="lower step, raise max_arms or the arms' max_k, or "
                                     "shorten 'always'"))
    elif len(space) > params.max_actions:
        problems.append(Problem(f"the action space has {len(space)} actions, more than "
                                f"max_actions {params.max_actions}", ("step",),
                                hint="raise step, lower max_arms, or raise max_actions"))
    return problems
