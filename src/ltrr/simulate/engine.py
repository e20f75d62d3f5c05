"""The simulation loop: rounds of serve → engage → learn, per policy, on the same sessions.

For every policy compared, the engine opens the pipeline with that policy in a fresh
state folder of its own (the built indexes are linked in, read-only; learned state,
decision and event logs start empty), then, round by round:

1. **serve** a batch of sessions through :meth:`Pipeline.run_batch` (decisions logged);
2. **probe** the same queries with every arm at its full budget (``min(budget,
   max_k)``), unlogged, on the same opened components — so each arm's rank of the target
   is known, and with it the reward of *any* allocation (the target is a candidate iff
   some arm ``a`` ranks it within the ``k_a`` the allocation gives it);
3. **engage**: the user model turns each final ranking into events (clicks, plays, ...);
4. **learn**: the events go through :func:`ltrr.feedback.ingest.ingest`, exactly as
   ``ltrr feedback`` would feed them — the policy and every other learner catch up; with
   the spec's ``feedback.attribution_window`` the round's decisions then close (every
   simulated user has answered), and the silent ones are learned as reward 0.

Sessions, engagement draws (one generator per session, shared by all policies) and
request ids depend only on the seed, so runs reproduce and policies face the same users.
"""

from __future__ import annotations

import copy
import difflib
import gc
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ltrr import extras
from ltrr.compiler import Plan, compile_spec
from ltrr.components import Indexed
from ltrr.errors import LtrrError, RunError
from ltrr.registry import Registry, default_registry
from ltrr.simulate.model import Session, UserModel, UserModelContext
from ltrr.types import Action, PolicyContext, Query

#: Simulated clock: first session at 2024-01-01 00:00 UTC (a Monday), ``interval_s`` apart.
START = 1_704_067_200.0

Progress = Callable[[str, int, int, dict[str, Any]], None]


@dataclass
class PolicyChoice:
    """A policy to simulate: a label, the registered policy and its params."""

    label: str
    use: str
    params: dict[str, Any] = field(default_factory=dict)
    source: str | None = None          # the file it was read from, for error messages
    ranker: dict[str, Any] | None = None   # a ranker block replacing the spec's ({use, with})


@dataclass
class SimConfig:
    """How to simulate: sessions, seed, round size, comparator grid, clock."""

    sessions: int
    seed: int = 0
    round_size: int = 200
    step: int | None = None            # comparator allocation grid (default: budget/≤10)
    max_arms: int | None = None        # most arms per comparator allocation (default: all)
    start: float = START
    interval_s: float = 30.0
    keep_state: Path | None = None     # keep each policy's state under this folder


@dataclass
class PolicyRun:
    """Per-session outcome of one policy (arrays indexed by session)."""

    label: str
    use: str
    params: dict[str, Any]
    reward: Any            # (S,) bool: target in the candidate set
    alloc: Any             # (S, A) int: the chosen allocation
    ranks: Any             # (S, A) int: each arm's rank of the target at full budget; 0 = absent
    shown: Any             # (S,) int: the target's final rank; 0 = not shown
    clicked: Any           # (S,) bool
    timings: dict[str, float]
    state_dir: str | None = None
    ranker: dict[str, Any] | None = None   # the ranker block it ran with
    #: arm id → answers (served and probed) that lost it, and the first such loss
    #: as (request id, trace note)
    dropped: dict[str, int] = field(default_factory=dict)
    first_loss: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class SimResult:
    """Everything a simulation produced, before accounting."""

    sessions: list[Session]
    arms: tuple[str, ...]
    budget: int
    probe: dict[str, int]
    types: tuple[str, ...]
    mix_changes: list[float]
    user_model: str
    user_params: dict[str, Any]
    config: SimConfig
    runs: list[PolicyRun]
    timings: dict[str, float]
    #: each session's target's entity type (a typed catalog), else None
    target_types: list[str | None] | None = None


# --- setup ------------------------------------------------------------------------------

def make_user_model(plan: Plan, name: str, params: dict[str, Any],
                    registry: Registry | None = None) -> UserModel:
    """Instantiate and open the registered user model ``name`` with ``params``."""
    from pydantic import ValidationError

    from ltrr.runtime.workspace import Workspace

    registry = registry or default_registry()
    reg = registry.user_models.get(name)
    if reg is None:
        known = sorted(registry.user_models)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        raise RunError(f"unknown user model '{name}'", field="--user-model",
                       hint=(f"did you mean '{close[0]}'? " if close else "")
                       + (f"installed: {', '.join(known)}" if known else
                          "no user model is installed (the built-in one is 'lastfm' from "
                          "ltrr_plugins.simulators.lastfm)"))
    extras.require(reg.cls.requires, f"user model '{name}'", RunError)
    try:
        validated = reg.cls.Params.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        fields = ", ".join(reg.cls.Params.model_fields)
        raise RunError(err["msg"], node=name, field=f"with.{loc}" if loc else "with",
                       hint=f"--with key=value, keys: {fields}") from None
    model = reg.cls(validated, UserModelContext(plan.spec.base_dir,
                                                lambda ws=Workspace(plan): ws.catalog,
                                                plan.model.catalog.title))
    missing = [t for t in model.event_types if t not in plan.model.feedback.weights]
    if missing:
        raise RunError(f"user model '{name}' emits event type(s) {', '.join(missing)}, which "
                       "have no weight in the spec", field="feedback.weights",
                       hint="declare them under feedback.weights (e.g. click: 1, play: 1, "
                            "skip: -0.5)")
    model.open()
    return model


def sample_sessions(model: UserModel, n: int, seed: int,
                    progress: Callable[[int, int], None] | None = None) -> list[Session]:
    """``n`` sessions from one generator seeded by ``seed`` (the same for every policy)."""
    import numpy as np

    rng = np.random.default_rng([seed, 0])
    out = []
    for i in range(n):
        out.append(model.sample(rng, i / n))
        if progress and (i + 1) % 500 == 0:
            progress(i + 1, n)
    if progress:
        progress(n, n)
    return out


def check_indexes(plan: Plan) -> None:
    """Every Indexed node of ``plan`` has current state (else StateError with the fix)."""
    from ltrr.runtime.indexing import check_state
    from ltrr.runtime.workspace import Workspace

    ws = Workspace(plan)
    for node in plan.nodes:
        if issubclass(node.registration.cls, Indexed):
            check_state(ws.instantiate(node), plan.spec.path)


def probe_allocation(plan: Plan) -> dict[str, int]:
    """Every arm at the full budget (capped by its max_k): the probe's allocation."""
    budget = plan.model.policy.budget
    return {a.id: min(budget, a.max_k) for a in plan.model.arms}


@contextmanager
def policy_state(plan: Plan, label: str, keep: Path | None) -> Iterator[Path]:
    """A fresh state folder for one policy run, the plan's built indexes and derived
    caches (``<node>.cache``) linked in."""
    if keep is not None:
        root = Path(keep) / label
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
    else:
        root = Path(tempfile.mkdtemp(prefix=f"ltrr-sim-{label}-"))
    try:
        for node in plan.nodes:
            if issubclass(node.registration.cls, Indexed):
                (root / node.id).symlink_to(plan.spec.state_dir / node.id,
                                            target_is_directory=True)
            # derived files built once (an encoder's ONNX export, 109 MB for MiniLM):
            # shared, not rebuilt per policy
            cache = plan.spec.state_dir / f"{node.id}.cache"
            if cache.is_dir():
                (root / cache.name).symlink_to(cache, target_is_directory=True)
        yield root
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def policy_plan(plan: Plan, choice: PolicyChoice, state: Path,
                registry: Registry | None = None) -> Plan:
    """``plan`` with the policy of ``choice``, its state (logs, learned) under ``state``."""
    from pydantic import ValidationError

    from ltrr.spec import Spec
    from ltrr.spec.errors import spec_errors
    from ltrr.spec.models import PipelineSpec

    data = copy.deepcopy(plan.spec.data)
    data["policy"] = {"use": choice.use, "budget": plan.model.policy.budget,
                      "with": copy.deepcopy(choice.params)}
    if choice.ranker is not None:
        data["ranker"] = copy.deepcopy(choice.ranker)
    data["state_dir"] = str(state)
    data["log"] = {"decisions": True}
    try:
        try:
            model = PipelineSpec.model_validate(data)
        except ValidationError as exc:
            raise spec_errors(exc, root=PipelineSpec, data=data,
                              smap=plan.spec.source) from None
        spec = Spec(model=model, data=data, source=plan.spec.source, path=plan.spec.path)
        return compile_spec(spec, registry)
    except LtrrError as exc:
        if choice.source is None:
            raise
        # the policy came from another file: the spec's positions would mislead
        raise RunError(f"policy '{choice.label}': {exc.message}", where=choice.source,
                       field=exc.field, hint=exc.hint) from None


class _Probe:
    """Stand-in policy of the probe: a fixed allocation, never logged."""

    def __init__(self, allocation: dict[str, int]):
        self.action = Action(allocation=dict(allocation), probability=1.0,
                             pmf=[(dict(allocation), 1.0)])

    def choose_batch(self, contexts: list[PolicyContext]) -> list[Action]:
        return [self.action] * len(contexts)


def probe(pipeline, queries: list[Query], allocation: dict[str, int]):
    """Run ``queries`` on ``pipeline``'s opened components with a fixed allocation, unlogged."""
    policy, log = pipeline.components["policy"], pipeline.log
    pipeline.components["policy"], pipeline.log = _Probe(allocation), None
    try:
        return pipeline.run_batch(queries)
    finally:
        pipeline.components["policy"], pipeline.log = policy, log


# --- the loop ---------------------------------------------------------------------------

def run_policy(plan: Plan, choice: PolicyChoice, sessions: list[Session], model: UserModel,
               config: SimConfig, registry: Registry | None = None,
               progress: Progress | None = None) -> PolicyRun:
    """Serve → probe → engage → learn over ``sessions`` with one policy."""
    import numpy as np
    import polars as pl

    from ltrr.feedback.events import EVENT_SCHEMA
    from ltrr.feedback.ingest import ingest
    from ltrr.runtime.pipeline import Pipeline

    arms = tuple(a.id for a in plan.model.arms)
    col = {a: j for j, a in enumerate(arms)}
    full = probe_allocation(plan)
    n = len(sessions)
    reward = np.zeros(n, dtype=bool)
    clicked = np.zeros(n, dtype=bool)
    shown = np.zeros(n, dtype=np.int32)
    alloc = np.zeros((n, len(arms)), dtype=np.int32)
    ranks = np.zeros((n, len(arms)), dtype=np.int32)
    t_serve = t_probe = t_engage = t_learn = 0.0
    dropped: dict[str, int] = {}
    first_loss: dict[str, tuple[str, str]] = {}
    started = time.perf_counter()
    with policy_state(plan, choice.label, config.keep_state) as state:
        pplan = policy_plan(plan, choice, state, registry)
        # offline: every arm answers however loaded the machine (no serving deadlines)
        pipeline = Pipeline(pplan, registry=registry, log_decisions=True, deadlines=False)
        try:
            for lo in range(0, n, config.round_size):
                hi = min(n, lo + config.round_size)
                stamps = [config.start + i * config.interval_s for i in range(lo, hi)]
                queries = [Query(request_id=f"sim-{config.seed}-{i:07d}", text=s.text,
                                 user_id=s.user_id, context={"timestamp": t})
                           for i, s, t in zip(range(lo, hi), sessions[lo:hi], stamps)]
                t = time.perf_counter()
                decisions = pipeline.run_batch(queries)
                t_serve += time.perf_counter() - t
                t = time.perf_counter()
                probed = probe(pipeline, queries, full)
                t_probe += time.perf_counter() - t
                _count_losses([*decisions, *probed], dropped, first_loss)
                t = time.perf_counter()
                rows = []
                for k, (d, p) in enumerate(zip(decisions, probed)):
                    i, s = lo + k, sessions[lo + k]
                    for arm, cands in p.candidates.items():
                        for c in cands:
                            if c.entity_id == s.target:
                                ranks[i, col[arm]] = c.rank
                                break
                    for arm, kk in d.action.allocation.items():
                        alloc[i, col[arm]] = kk
                    reward[i] = any(c.entity_id == s.target
                                    for cands in d.candidates.values() for c in cands)
                    ranking = [r.entity_id for r in d.ranking]
                    if s.target in ranking:
                        shown[i] = ranking.index(s.target) + 1
                    rng = np.random.default_rng([config.seed, 1, i])
                    for e_no, e in enumerate(model.engage(s, ranking, rng)):
                        clicked[i] |= e.type == "click" and e.entity_id == s.target
                        rows.append({"event_id": f"{d.request_id}-{e_no}",
                                     "request_id": d.request_id, "user_id": s.user_id,
                                     "entity_id": e.entity_id, "type": e.type,
                                     "position": e.position, "timestamp": stamps[k] + e.delay_s,
                                     "query": None})
                t_engage += time.perf_counter() - t
                t = time.perf_counter()
                # every simulated user of the round has answered: with an attribution
                # window, the round's decisions close now, silent ones learned as 0
                window = pplan.model.feedback.attribution_window
                if rows or window is not None:
                    ingest(pplan, pl.DataFrame(rows, schema=EVENT_SCHEMA),
                           workspace=pipeline.workspace,
                           now=None if window is None else time.time() + window)
                t_learn += time.perf_counter() - t
                if progress:
                    progress(choice.label, hi, n, {"recall": float(reward[:hi].mean())})
        finally:
            pipeline.close()   # also unfreezes what the pipeline froze
            del pipeline
            gc.collect()
    total = time.perf_counter() - started
    return PolicyRun(choice.label, choice.use, dict(choice.params), reward, alloc, ranks,
                     shown, clicked,
                     timings={"seconds": round(total, 3), "serve": round(t_serve, 3),
                              "probe": round(t_probe, 3), "engage": round(t_engage, 3),
                              "learn": round(t_learn, 3),
                              "ms_per_session": round(1000 * total / max(n, 1), 3)},
                     state_dir=str(state) if config.keep_state else None,
                     ranker=copy.deepcopy(pplan.spec.data.get("ranker") or {"use": "score"}),
                     dropped=dropped, first_loss=first_loss)


def _count_losses(decisions, dropped: dict[str, int],
                  first_loss: dict[str, tuple[str, str]]) -> None:
    """Count, per arm, the answers that lost it; keep the first loss's request and note."""
    for d in decisions:
        for arm in d.dropped:
            dropped[arm] = dropped.get(arm, 0) + 1
            if arm not in first_loss:
                note = next((n for n in d.trace if n.startswith(f"arm '{arm}'")), "")
                first_loss[arm] = (d.request_id, note)
