"""Shared machinery of the learning policies (``uniform``, ``epsilon_greedy``, ``vw``).

A :class:`BanditPolicy` enumerates its :class:`ActionSpace`, featurizes each query,
asks its subclass for a pmf over the actions, and draws the action with a uniform
number derived only from ``seed`` and the request id (same seed + request → same
draw, whatever else ran before). ``learn`` turns interactions into one
:class:`Outcome` per decision, hands them to the subclass, updates the users'
history and the arms' yields, and persists everything as one JSON file written
atomically, ``ctx.learned_dir / "policy.json"`` (one file: one fsync, never half of
the model with the other half of the history).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ltrr.components import ColumnUse, Learner, PlanView, Policy, Problem, TableUse
from ltrr.errors import StateError
from ltrr.state import atomic_write_bytes
from ltrr.tables import column
from ltrr.types import Action, PolicyContext, action_key
from ltrr_plugins.policies.features import ArmYield, ContextFeaturizer, FeatureParams, Namespaces
from ltrr_plugins.policies.reward import Outcome, RewardParams, outcomes
from ltrr_plugins.policies.space import ActionSpace, SpaceParams, check_space

if TYPE_CHECKING:
    import polars as pl

STATE_FORMAT = 1
STATE_FILE = "policy.json"
NEEDED = ("request_id", "user_id", "query", "entity_id", "weight", "timestamp",
          "in_candidates", "arms", "allocation", "probability", "action_features")


class BanditParams(SpaceParams, FeatureParams):
    """Params of every learning policy: action space, features, reward, seed."""

    seed: int = Field(0, description=(
        "Seed of the action draw; the draw of a request depends only on it and the "
        "request id, so runs reproduce."))
    reward: RewardParams = Field(default_factory=RewardParams, description=(
        "Costs subtracted from the reward, per-type weights of engagements (event weights "
        "come from feedback.weights)."))


def draw(seed: int, request_id: str) -> float:
    """A uniform number in [0, 1) fixed by ``seed`` and ``request_id``."""
    h = hashlib.blake2b(f"{seed}\x1f{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64


def sample(pmf: list[float], u: float) -> int:
    """The index ``u`` falls into on the cumulative ``pmf`` (skipping zero entries)."""
    acc = 0.0
    last = 0
    for i, p in enumerate(pmf):
        if p <= 0.0:
            continue
        acc += p
        last = i
        if u < acc:
            return i
    return last


class BanditPolicy(Policy, Learner):
    """Base of the learning policies (not registered itself)."""

    Params = BanditParams
    #: decisions without events are learned as reward 0 once the spec's attribution
    #: window closed (:mod:`ltrr.feedback.silence`)
    learns_silence = True

    @classmethod
    def check(cls, params: BanditParams, plan: PlanView) -> list[Problem]:
        problems = check_space(params, plan)
        for i, arm in enumerate(params.evidence_arms or []):
            if arm not in plan.arms:
                problems.append(Problem(f"'{arm}' is not an arm of this pipeline",
                                        ("evidence_arms", i),
                                        hint=f"arms: {', '.join(plan.arms)}"))
        problems += [p for t in params.reward.type_weights if (p := plan.unknown_type(
            t, ("reward", "type_weights", t), "reward.type_weights"))]
        return problems

    @classmethod
    def tables(cls, params: BanditParams) -> list[TableUse]:
        if not params.user_tags:
            return []
        return [TableUse((ColumnUse(params.user_tags, ("user_tags",), "text"),))]

    # --- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        self.space = ActionSpace.from_params(self.params, self.ctx.plan)
        self.featurizer = ContextFeaturizer(self.params)
        self.yields = ArmYield(self.params.yield_alpha)
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._written = 0
        self._entity_tags: dict[str, list[str]] | None = None
        self.learned = 0
        self._init_model()
        state = self._state_path
        if state.exists():
            try:
                obj = json.loads(state.read_text())
            except ValueError as exc:
                raise self._bad_state(f"{state} is not valid JSON ({exc})") from exc
            if obj.get("format") != STATE_FORMAT or obj.get("policy") != self.name:
                raise self._bad_state(f"{state} holds format {obj.get('format')} of policy "
                                      f"'{obj.get('policy')}', expected format {STATE_FORMAT} "
                                      f"of '{self.name}'")
            self.featurizer.user.load(obj.get("users", {}))
            self.yields.load(obj.get("yields", {}))
            self.learned = int(obj.get("learned", 0))
            self._restore(obj.get("model", {}))

    @property
    def _state_path(self) -> Path:
        return self.ctx.learned_dir / STATE_FILE

    def _bad_state(self, message: str) -> StateError:
        return StateError(message, node=self.ctx.node_id,
                          hint=f"move {self._state_path} away to start afresh, then relearn "
                               f"with `ltrr train <spec>`")

    # --- deciding ----------------------------------------------------------------------

    @property
    def wants_evidence(self) -> bool:
        """Whether the pipeline should ask the arms for evidence before each decision."""
        return "evidence" in self.featurizer.groups

    @property
    def evidence_arms(self) -> list[str] | None:
        """The arms to ask (None: every arm that gives evidence)."""
        return self.params.evidence_arms

    def features(self, ctx: PolicyContext) -> Namespaces:
        """The namespaces a decision on ``ctx`` sees (context groups + arm yields)."""
        ns = self.featurizer.featurize(ctx)
        y = self.yields.snapshot(self.space.arms)
        if y:
            ns["yield"] = y
        return ns

    def choose_batch(self, contexts: list[PolicyContext]) -> list[Action]:
        with self._lock:
            feats = [self.features(c) for c in contexts]
            pmfs = self._pmfs(feats)
        actions = self.space.actions
        out = []
        for c, ns, pmf in zip(contexts, feats, pmfs):
            i = sample(pmf, draw(self.params.seed, c.query.request_id))
            out.append(Action(allocation=dict(actions[i]), probability=pmf[i],
                              pmf=list(zip(actions, pmf)), index=i, features=ns))
        return out

    def pmf(self, contexts: list[PolicyContext | dict]) -> list[list[tuple[dict, float]]]:
        """The distribution over actions for each context (a query or logged features).

        A ``dict`` is taken as the namespaces a decision logged (``Action.features``).
        """
        feats = [c if isinstance(c, dict) else self.features(c) for c in contexts]
        with self._lock:
            pmfs = self._pmfs(feats)
        return [list(zip(self.space.actions, p)) for p in pmfs]

    def pmf_logged(self, features: dict, actions: list[dict[str, int]]) -> list[float]:
        """Probabilities of ``actions`` for logged ``features``: what off-policy
        evaluation asks (:class:`ltrr.ope.LoggedPmfPolicy`). They are this policy's true
        probabilities (0 for an action outside its space), never renormalised over
        ``actions``: OPE asks about :meth:`playable_actions` too, so the mass this policy
        puts on allocations the logger never played is counted, not spread over the rest."""
        (pmf,) = self.pmf([features or {}])
        probs = {action_key(a): p for a, p in pmf}
        return [probs.get(action_key(a), 0.0) for a in actions]

    def playable_actions(self) -> list[dict[str, int]]:
        """Every allocation of this policy's action space, for off-policy evaluation
        (:class:`ltrr.ope.PlayableActionsPolicy`)."""
        return [dict(a) for a in self.space.actions]

    def rewards(self, interactions: "pl.DataFrame") -> "pl.DataFrame":
        """One reward per decision, as this policy learns it (for off-policy evaluation)."""
        import polars as pl

        outs = outcomes(interactions, self.params.reward)
        return pl.DataFrame({"request_id": [o.request_id for o in outs],
                             "reward": [float(o.reward) for o in outs]},
                            schema={"request_id": pl.String, "reward": pl.Float64})

    # --- learning ----------------------------------------------------------------------

    def learn(self, interactions: "pl.DataFrame") -> dict[str, Any]:
        """Learn from new interactions; persist atomically; return stats."""
        from ltrr.feedback.interactions import require_columns

        require_columns(interactions, NEEDED, self.ctx.node_id)
        started = time.perf_counter()
        outs = outcomes(interactions, self.params.reward)
        examples: list[tuple[Namespaces, int, float, float]] = []
        unknown = refeaturized = bad_probability = 0
        index: dict[tuple, int | None] = {}       # allocation → action, looked up once
        with self._lock:
            for o in outs:
                if o.probability is None:         # its propensity is unknown: no weight
                    bad_probability += 1
                    continue
                alloc = tuple(o.allocation.items())
                i = index.get(alloc, -1)
                if i == -1:
                    i = index[alloc] = self.space.index_of(action_key(o.allocation))
                if i is None:
                    unknown += 1
                    continue
                ns = o.features
                if ns is None:
                    refeaturized += 1
                    ns = self.featurizer.featurize_logged(o.query, o.user_id)
                examples.append((ns, i, max(o.probability, 1e-6), o.reward))
            if examples:
                self._learn(examples)
            for o in outs:
                # a known outcome: something engaged, or silence within the window (an
                # unknown one — events without a positive weight — says nothing of arms)
                if o.positive or o.silent:
                    hit = {a for _, arms in o.engaged for a in arms}
                    for arm in o.allocation:
                        self.yields.update(arm, arm in hit)
            users = 0
            if "user" in self.featurizer.groups:
                users = self._learn_users(interactions)
            self.learned += len(examples)
            snapshot = self._snapshot()
        # the write (fsync) happens outside the lock, so choose_batch is not held up by it
        self._write(*snapshot)
        stats: dict[str, Any] = {"decisions": len(outs), "learned": len(examples)}
        if examples:
            stats["mean_reward"] = round(sum(e[3] for e in examples) / len(examples), 4)
        if unknown:
            stats["ignored_action_not_in_space"] = unknown
        if bad_probability:
            stats["ignored_bad_probability"] = bad_probability
        if refeaturized:
            stats["refeaturized"] = refeaturized
        if users:
            stats["user_engagements"] = users
        stats["seconds"] = round(time.perf_counter() - started, 3)
        return stats

    def _learn_users(self, interactions: "pl.DataFrame") -> int:
        tags = self._tags_of()
        n = 0
        for user, entity, w in interactions.select("user_id", "entity_id", "weight").iter_rows():
            if user and entity and (w or 0.0) > 0:
                self.featurizer.user.update(user, tags.get(entity) if tags else None)
                n += 1
        return n

    def _tags_of(self) -> dict[str, list[str]] | None:
        col = self.params.user_tags
        if not col:
            return None
        if self._entity_tags is None:
            values = column(self.ctx.catalog.frame, col, node=self.ctx.node_id,
                            field="with.user_tags").to_list()
            self._entity_tags = {e: (v if isinstance(v, list) else [v] if v else [])
                                 for e, v in zip(self.ctx.catalog.ids, values)}
        return self._entity_tags

    def _snapshot(self) -> tuple[int, bytes]:
        """The state as bytes, numbered (call under ``self._lock``)."""
        self._seq = getattr(self, "_seq", 0) + 1
        return self._seq, json.dumps({
            "format": STATE_FORMAT, "policy": self.name, "learned": self.learned,
            "users": self.featurizer.user.to_json(), "yields": self.yields.to_json(),
            "model": self._persist()}).encode()

    def _write(self, seq: int, data: bytes) -> None:
        """Write a snapshot atomically unless a newer one was written already."""
        with self._write_lock:
            if seq > self._written:
                atomic_write_bytes(self._state_path, data)
                self._written = seq

    # --- subclass hooks ----------------------------------------------------------------

    def _init_model(self) -> None:
        """Set up an untrained model (called in ``open`` before restoring state)."""

    def _restore(self, model: dict) -> None:
        """Restore the model from what ``_persist`` returned."""

    def _persist(self) -> dict:
        """The model as JSON-able state (saved with the rest in policy.json)."""
        return {}

    def _pmfs(self, feats: list[Namespaces]) -> list[list[float]]:
        raise NotImplementedError

    def _learn(self, examples: list[tuple[Namespaces, int, float, float]]) -> None:
        """Learn from ``(features, action index, logged probability, reward)``."""


__all__ = ["BanditParams", "BanditPolicy", "Outcome", "draw", "sample"]
