"""Simulations as a sweep of independent runs: policy choices (× rankers) × seeds.

Each run — one policy choice on one seed's sessions — opens its own pipeline in a
fresh state folder and learns only from its own feedback (:func:`run_policy`), so runs
share nothing but the built indexes and can go to any executor
(:mod:`ltrr.executors`). Sessions are drawn here, once per seed, and sent with each
run; the user model is opened once per worker. Results are gathered in (seed, policy)
order, so the summary and figures are the same bytes whichever executor ran them.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltrr.compiler import Plan
from ltrr.errors import RunError
from ltrr.executors import Executor, LocalExecutor
from ltrr.registry import Registry, default_registry
from ltrr.simulate.engine import (PolicyChoice, PolicyRun, Progress, SimConfig, SimResult,
                                  check_indexes, make_user_model, policy_plan, policy_state,
                                  probe_allocation, run_policy, sample_sessions)
from ltrr.simulate.model import Session, UserModel


@dataclass
class RunTask:
    """One run of the sweep: a policy choice on one seed's sessions."""

    choice: PolicyChoice
    seed: int
    sessions: list[Session]

    @property
    def name(self) -> str:
        return f"policy {self.choice.label}, seed {self.seed}"


class Users:
    """A worker's state: the user model, opened once (the driver's own when local)."""

    def __init__(self, plan: Plan, name: str, params: dict[str, Any],
                 model: UserModel | None = None, registry: Registry | None = None,
                 progress: Progress | None = None):
        self.plan, self.name, self.params = plan, name, params
        self.model = model or make_user_model(plan, name, params, registry)
        self.registry, self.progress = registry, progress


def _open_users(plan: Plan, name: str, params: dict[str, Any]) -> Users:
    return Users(plan, name, params)


def _run(plan: Plan, config: SimConfig, several_seeds: bool, users: Users,
         task: RunTask) -> PolicyRun:
    keep = config.keep_state
    if keep is not None and several_seeds:
        keep = Path(keep) / f"seed-{task.seed}"
    cfg = dataclasses.replace(config, seed=task.seed, keep_state=keep)
    return run_policy(plan, task.choice, task.sessions, users.model, cfg, users.registry,
                      users.progress)


def check_sweep(config: SimConfig, policies: list[PolicyChoice], seeds: list[int]) -> None:
    if config.sessions <= 0:
        raise RunError(f"--sessions must be positive, got {config.sessions}", field="--sessions")
    if config.round_size <= 0:
        raise RunError(f"--round-size must be positive, got {config.round_size}",
                       field="--round-size")
    labels = [p.label for p in policies]
    if not policies or len(set(labels)) != len(labels):
        raise RunError(f"policies must be given once each, got {', '.join(labels) or 'none'}",
                       field="--policies", hint="e.g. --policies static,vw")
    if not seeds or len(set(seeds)) != len(seeds):
        raise RunError(f"seeds must be given once each, got {seeds}", field="--seeds",
                       hint="e.g. --seeds 0,1,2,3 or --seeds 4")


def sweep(plan: Plan, user_model: str, user_params: dict[str, Any],
          policies: list[PolicyChoice], config: SimConfig, seeds: list[int], *,
          registry: Registry | None = None, progress: Progress | None = None,
          executor: Executor | None = None) -> list[SimResult]:
    """Simulate ``config.sessions`` sessions for each policy of ``policies`` and each of
    ``seeds`` (``config.seed`` is ignored); one :class:`SimResult` per seed, in order.

    With a local executor, ``progress`` follows every run round by round; elsewhere it
    hears of each run as it finishes (label ``runs``)."""
    check_sweep(config, policies, seeds)
    registry = registry or default_registry()
    executor = executor or LocalExecutor()
    started = time.perf_counter()
    check_indexes(plan)
    for choice in policies:            # fail on a bad policy before any long work
        with policy_state(plan, choice.label, None) as state:
            policy_plan(plan, choice, state, registry)
    model = make_user_model(plan, user_model, user_params, registry)
    sessions: dict[int, list[Session]] = {}
    sampled: dict[int, float] = {}
    for seed in seeds:
        t = time.perf_counter()
        sessions[seed] = sample_sessions(
            model, config.sessions, seed,
            (lambda d, n: progress("sessions", d, n, {})) if progress else None)
        sampled[seed] = time.perf_counter() - t
    tasks = [RunTask(choice, seed, sessions[seed]) for seed in seeds for choice in policies]
    run = functools.partial(_run, plan, config, len(seeds) > 1)
    if executor.kind == "local":       # the driver's user model; progress round by round
        runs = executor.map(run, tasks, names=[t.name for t in tasks],
                            init=lambda: Users(plan, user_model, user_params, model,
                                               registry, progress))
    else:
        done = [0]

        def finished(i: int, _run: PolicyRun) -> None:
            done[0] += 1
            if progress:
                progress("runs", done[0], len(tasks), {})

        if progress:
            progress("runs", 0, len(tasks), {})
        runs = executor.map(run, tasks, names=[t.name for t in tasks], on_done=finished,
                            init=functools.partial(_open_users, plan, user_model,
                                                   user_params))
    total = round(time.perf_counter() - started, 3)
    type_of = model.ctx.catalog.type_of if plan.model.catalog.types is not None else None
    out = []
    for k, seed in enumerate(seeds):
        s = sessions[seed]
        out.append(SimResult(
            target_types=[type_of.get(str(x.target)) for x in s] if type_of else None,
            sessions=s, arms=tuple(a.id for a in plan.model.arms),
            budget=plan.model.policy.budget, probe=probe_allocation(plan),
            types=model.query_types(), mix_changes=model.mix_changes(),
            user_model=user_model, user_params=model.params.model_dump(mode="json"),
            config=dataclasses.replace(config, seed=seed),
            runs=runs[k * len(policies):(k + 1) * len(policies)],
            timings={"sample_sessions": round(sampled[seed], 3), "total": total}))
    return out


def simulate(plan: Plan, user_model: str, user_params: dict[str, Any],
             policies: list[PolicyChoice], config: SimConfig, *,
             registry: Registry | None = None, progress: Progress | None = None,
             executor: Executor | None = None) -> SimResult:
    """Simulate ``config.sessions`` sessions for each policy of ``policies`` on the
    sessions of ``config.seed``."""
    return sweep(plan, user_model, user_params, policies, config, [config.seed],
                 registry=registry, progress=progress, executor=executor)[0]
