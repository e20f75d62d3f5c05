"""The learned rankers' common machinery: features, training examples from feedback,
position-bias weights, scheduled retraining with a held-out evaluation, persistence.

A learned ranker ranks by fused score until it has a model (cold start = the ``score``
ranker). It learns through ``ltrr feedback`` / ``ltrr train`` like every learner, with
the decisions the feedback answers (``learns_from_decisions``):

1. each decision that got a positive event is re-merged from its logged candidates
   (the same merger, so fused scores match serving) and featurised with the user
   profiles *as they were before this feedback* (point in time, up to the feedback
   batch); the engaged entities are labelled with their best event weight;
2. position bias: an engagement of a position-biased type (``click``) at shown
   position ``p`` weighs ``min(p ** eta, max_ipw)`` — the inverse of the examination
   propensity ``1 / p ** eta`` of a position-based click model (``ipw``); or LightGBM
   learns the position biases itself (``learned``, unbiased LambdaMART);
3. examples are appended to ``<learned>/examples`` (append-only Parquet); the user
   profiles are updated; every ``retrain_every`` newly judged requests the model is
   retrained on the latest ``max_requests``: fitted on the oldest ``1 - holdout``,
   evaluated on the newest ``holdout`` (MRR and nDCG@10 against the fused order), then
   refitted on all and swapped in atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from pydantic import Field

from ltrr.components import Learner, PlanView, Problem, Ranker
from ltrr.errors import StateError
from ltrr.evaluation import graded_metrics
from ltrr.parquet_log import ParquetLog
from ltrr.state import atomic_write_bytes, atomic_write_json
from ltrr.text import normalize
from ltrr.types import Candidate, Merged, Query, RankRequest, Ranked, Slot
from ltrr_plugins.rankers.features import FeatureBuilder, RankerFeatureParams, UserProfiles

if TYPE_CHECKING:
    import numpy as np

EXAMPLES = pl.Schema({
    "request_id": pl.String,
    "decided_at": pl.Float64,
    "features_id": pl.String,    # which feature names the vector follows
    "fused_rank": pl.Int32,      # 1-based rank in the merger's order
    "position": pl.Int32,        # shown position, 0 = not shown
    "label": pl.Float32,         # best event weight of the entity in this request, 0 = none
    "weight": pl.Float32,        # position-bias (IPW) weight
    "x": pl.List(pl.Float32),
    "query_key": pl.String,      # the request's normalised query (held-out split by query)
})
log = logging.getLogger("ltrr")

STATE = "ranker.json"
MODEL = "model.txt"
NEEDS = ("request_id", "user_id", "entity_id", "type", "weight", "position")


class LearnedRankerParams(RankerFeatureParams):
    """Features, labels, position-bias correction and retraining of a learned ranker."""

    position_bias: Literal["ipw", "learned", "none"] = Field("ipw", description=(
        "ipw: weigh engagements of position-biased types by the inverse examination "
        "propensity p^eta; learned: LightGBM estimates position biases (unbiased "
        "LambdaMART; lightgbm only); none: no correction."))
    eta: float = Field(1.0, ge=0, description=(
        "Position-based click model: examination probability at position p is 1/p^eta."))
    max_ipw: float = Field(10.0, ge=1, description="Cap of an IPW weight (variance control).")
    biased_events: list[str] = Field(default_factory=lambda: ["click"], description=(
        "Event types whose occurrence depends on the shown position (others, e.g. a play "
        "that happens wherever the user found the item, get weight 1)."))
    train_depth: int = Field(100, ge=1, description=(
        "Candidates per request kept for training: the first ones in fused order. Keep it "
        "at least the policy budget, so training sees what serving ranks."))
    min_requests: int = Field(100, ge=2, description=(
        "Judged requests (with a positive event) before the first model is trained."))
    min_queries: int = Field(20, ge=1, description=(
        "Distinct queries (normalised text) the training window must hold before a model "
        "may deploy: many requests for a few queries teach those queries, not ranking."))
    min_holdout_queries: int = Field(5, ge=1, description=(
        "Distinct held-out queries the gate needs to judge a model; with fewer, a model "
        "does not deploy (with `gate: false` it deploys, with a warning)."))
    retrain_every: int = Field(500, ge=1, description=(
        "Newly judged requests between two retrainings."))
    max_requests: int = Field(10000, ge=10, description=(
        "Training window: the most recent judged requests."))
    holdout: float = Field(0.2, ge=0, lt=1, description=(
        "Share of the distinct queries held out to evaluate each retraining: those judged "
        "most recently, with all their requests, so no query is on both sides."))
    gate: bool = Field(True, description=(
        "Deploy a retrained model only if it beats the fused order on the held-out "
        "requests (MRR); otherwise keep serving what was served before."))
    seed: int = Field(0, description="Seed of the model's randomness.")


class LearnedRanker(Ranker, Learner):
    """Base of rankers trained from feedback; subclasses provide the model."""

    Params = LearnedRankerParams
    learns_from_decisions = True

    # --- the model, per subclass ---------------------------------------------------------

    def fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, sizes: list[int],
            positions: np.ndarray, valid: tuple | None) -> Any:
        """A fitted model (``valid`` = the same tuple for held-out data, or None)."""
        raise NotImplementedError

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def dump(self, model: Any) -> bytes:
        raise NotImplementedError

    def load_model(self, data: bytes) -> Any:
        raise NotImplementedError

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    def check(cls, params: LearnedRankerParams, plan: PlanView) -> list[Problem]:
        return params.check_features(plan)

    def open(self) -> None:
        p = self.params
        self.profiles = UserProfiles()
        self.builder = FeatureBuilder(p, self.ctx.plan.arms, self.ctx.catalog, self.profiles,
                                      self.ctx.plan.types)
        self.features_id = hashlib.sha1(json.dumps(self.builder.names).encode()).hexdigest()[:12]
        self.examples = ParquetLog(self.ctx.learned_dir / "examples", EXAMPLES)
        self._lock = threading.Lock()        # serialises learn() / retrain()
        self.model: Any = None
        self.state: dict[str, Any] = {"judged": 0, "judged_since_training": 0,
                                      "trainings": 0, "last_training": None}
        path = self.ctx.learned_dir / STATE
        if path.exists():
            try:
                obj = json.loads(path.read_text())
                self.profiles.load(obj.get("profiles", {}))
                self.state.update(obj.get("state", {}))
            except (ValueError, AttributeError, TypeError) as exc:
                raise self._bad_state(f"{path} is not a valid ranker state ({exc})") from exc
            model_path = self.ctx.learned_dir / MODEL
            if model_path.exists() and self.state.get("features_id") == self.features_id:
                try:
                    self.model = self.load_model(model_path.read_bytes())
                except Exception as exc:   # a model file that will not load is corrupt state
                    raise self._bad_state(f"{model_path} cannot be loaded ({exc})") from exc

    def _bad_state(self, message: str) -> StateError:
        return StateError(message, node=self.ctx.node_id,
                          hint=f"move {self.ctx.learned_dir} away to start afresh, then relearn "
                               f"with `ltrr train <spec>`")

    # --- ranking -----------------------------------------------------------------------

    def rank(self, query: Query, merged: list[Merged], k: int) -> list[Ranked]:
        return self.rank_batch([RankRequest(query, [], merged, k)])[0]

    def rank_batch(self, requests: list[RankRequest]) -> list[list[Ranked]]:
        import numpy as np

        model = self.model           # one read: a retraining may swap it meanwhile
        if model is None:
            return [[Ranked(i + 1, m.entity_id, m.score, m.sources)
                     for i, m in enumerate(r.merged[: r.k])] for r in requests]
        mats = self.builder.matrix(requests)
        sizes = [len(m) for m in mats]
        scores = self.predict(model, np.concatenate(mats)) if sum(sizes) else np.zeros(0)
        out, start = [], 0
        for r, n in zip(requests, sizes):
            s = scores[start:start + n]
            start += n
            order = np.argsort(-s, kind="stable")[: r.k]
            out.append([Ranked(i + 1, r.merged[j].entity_id, float(s[j]), r.merged[j].sources)
                        for i, j in enumerate(order)])
        return out

    # --- learning ----------------------------------------------------------------------

    def learn(self, interactions: pl.DataFrame, decisions: pl.DataFrame | None = None
              ) -> dict[str, Any]:
        """Examples from the judged decisions, profile updates, retraining when due."""
        from ltrr.feedback.interactions import require_columns

        require_columns(interactions, NEEDS, self.ctx.node_id)
        started = time.perf_counter()
        with self._lock:
            pos = interactions.filter(pl.col("weight") > 0, pl.col("entity_id").is_not_null())
            judged = self._examples_from(pos, decisions) if decisions is not None else 0
            self._update_profiles(pos)
            self.state["judged"] += judged
            self.state["judged_since_training"] += judged
            stats: dict[str, Any] = {"interactions": interactions.height, "judged": judged}
            due = (self.state["judged_since_training"] >= self.params.retrain_every
                   or (self.model is None and self.state["judged"] >= self.params.min_requests))
            if due:
                stats["training"] = self._retrain()
            self._save()
        stats["seconds"] = round(time.perf_counter() - started, 3)
        return stats

    def retrain(self) -> dict[str, Any]:
        """Train on the current examples now."""
        with self._lock:
            out = self._retrain()
            self._save()
        return out

    def train_pending(self) -> dict[str, Any] | None:
        """Retrain if requests were judged since the last training (``ltrr train`` calls
        it after replaying a log); None when there is nothing new or too little."""
        if not self.state["judged_since_training"] or \
                self.state["judged"] < self.params.min_requests:
            return None
        return self.retrain()

    def _examples_from(self, pos: pl.DataFrame, decisions: pl.DataFrame) -> int:
        import numpy as np

        if pos.height == 0 or decisions.height == 0:
            return 0
        biased = pl.col("type").is_in(self.params.biased_events)
        labels = (pos.filter(pl.col("request_id").is_not_null())
                  .group_by("request_id", "entity_id")
                  .agg(pl.col("weight").max().alias("label"),
                       (biased & pl.col("position").is_not_null()).any().alias("biased"),
                       pl.col("position").min().alias("position")))
        if labels.height == 0:
            return 0
        by_request: dict[str, dict[str, tuple[float, bool, int | None]]] = {}
        for rid, ent, lab, b, p in labels.iter_rows():
            by_request.setdefault(rid, {})[ent] = (lab, b, p)
        rows = (decisions.filter(pl.col("request_id").is_in(list(by_request)))
                .unique("request_id", keep="first")
                .select("request_id", "timestamp", "query", "user_id", "slots", "candidates",
                        "ranking"))
        merger = self.ctx.node("merge")
        budget = self.ctx.plan.budget
        depth = self.params.train_depth
        out: dict[str, list] = {c: [] for c in EXAMPLES}
        n = 0
        for rid, ts, text, user, slots, cands, ranking in rows.iter_rows():
            per_arm: dict[str, list[Candidate]] = {}
            for c in cands or []:
                per_arm.setdefault(c["arm"], []).append(
                    Candidate(c["entity_id"], c["arm"], c["rank"], c["score"], seed=c["seed"]))
            for lst in per_arm.values():
                lst.sort(key=lambda c: c.rank)
            merged = merger.merge(per_arm, budget)
            labelled = by_request[rid]
            # the first `depth` in fused order, engaged or not: adding engaged ones from
            # deeper down would teach "deep rows are the engaged ones", a leak
            keep = range(min(depth, len(merged)))
            if not any(merged[i].entity_id in labelled for i in keep):
                continue      # the engaged entity was never a candidate: nothing to rank
            shown = {r["entity_id"]: r["rank"] for r in ranking or []}
            key = normalize(text or "") or rid
            req = RankRequest(Query(rid, text or "", user),
                              [Slot(s["name"], s["value"], s["start"], s["end"], s["score"],
                                    s["entity_id"]) for s in slots or []],
                              merged, len(merged))
            x = self.builder.matrix([req], depth)[0]
            for row, i in enumerate(keep):
                ent = merged[i].entity_id
                lab, b, p = labelled.get(ent, (0.0, False, None))
                position = p or shown.get(ent) or 0
                w = 1.0
                if lab > 0 and b and position and self.params.position_bias == "ipw":
                    w = min(self.params.max_ipw, float(position) ** self.params.eta)
                out["request_id"].append(rid)
                out["decided_at"].append(ts)
                out["features_id"].append(self.features_id)
                out["fused_rank"].append(i + 1)
                out["position"].append(position)
                out["label"].append(lab)
                out["weight"].append(w)
                out["x"].append(x[row])
                out["query_key"].append(key)
            n += 1
        if n:
            frame = pl.DataFrame({k: v for k, v in out.items() if k != "x"},
                                 schema={k: t for k, t in EXAMPLES.items() if k != "x"})
            frame = frame.with_columns(pl.Series("x", np.stack(out["x"]),
                                                 dtype=pl.Array(pl.Float32, len(self.builder.names)))
                                       .cast(pl.List(pl.Float32)))
            self.examples.append_frame(frame)
        return n

    def _update_profiles(self, pos: pl.DataFrame) -> None:
        if "personal" not in self.builder.groups or pos.height == 0:
            return
        for user, ent, w in pos.filter(pl.col("user_id").is_not_null()).select(
                "user_id", "entity_id", "weight").iter_rows():
            self.profiles.update(user, ent, float(w), self.builder.tags_of(ent))

    def _training_data(self) -> pl.DataFrame:
        parts = self.examples.parts()
        if not parts:
            return EXAMPLES.to_frame()
        # a request learned twice (a crash between logging examples and saving the state
        # re-delivers its events) keeps its latest rows only
        # parts written before query_key existed read it as null: each such request counts
        # as a query of its own
        data = (pl.scan_parquet(parts, missing_columns="insert")
                .filter(pl.col("features_id") == self.features_id)
                .with_columns(pl.col("query_key").fill_null(pl.col("request_id")))
                .collect().unique(["request_id", "fused_rank"], keep="last",
                                  maintain_order=True))
        keep = (data.group_by("request_id").agg(pl.col("decided_at").first())
                .sort("decided_at", "request_id").tail(self.params.max_requests))
        return (data.join(keep.select("request_id", pl.col("decided_at").alias("_t")),
                          on="request_id")
                .sort("_t", "request_id", "fused_rank").drop("_t"))

    @staticmethod
    def _arrays(data: pl.DataFrame) -> tuple:
        import numpy as np

        x = np.asarray(data["x"].to_list(), dtype=np.float32) if data.height else \
            np.zeros((0, 0), dtype=np.float32)
        sizes = data.group_by("request_id", maintain_order=True).len()["len"].to_list()
        return (x, data["label"].to_numpy(), data["weight"].to_numpy(), sizes,
                data["position"].to_numpy(), data["fused_rank"].to_numpy())

    def _retrain(self) -> dict[str, Any]:
        started = time.perf_counter()
        data = self._training_data()
        requests = data["request_id"].unique(maintain_order=True).to_list()
        if len(requests) < 2:
            return {"skipped": "fewer than 2 judged requests"}
        queries = self._queries(data)
        report: dict[str, Any] = {"requests": len(requests), "queries": len(queries),
                                  "rows": data.height}
        p = self.params
        if len(queries) < p.min_queries:
            return self._refused(report, started, (
                f"{len(requests)} judged requests hold only {len(queries)} distinct "
                f"queries, fewer than min_queries {p.min_queries}: a model would learn "
                "those queries, not ranking"))
        held = max(1, round(len(queries) * p.holdout)) if p.holdout else 0
        if held and held < p.min_holdout_queries:
            thin = (f"only {held} held-out queries (min_holdout_queries "
                    f"{p.min_holdout_queries}) to judge a model trained on "
                    f"{len(queries) - held}")
            if p.gate:
                return self._refused(report, started, thin)
            report["warning"] = thin + "; deployed unjudged (gate: false)"
            log.warning("ranker '%s': %s", self.ctx.node_id, report["warning"])
        if held:
            # the queries judged most recently are held out, with every request of theirs
            held_keys = pl.Series(queries[-held:]).implode()
            tr = data.filter(~pl.col("query_key").is_in(held_keys))
            va = data.filter(pl.col("query_key").is_in(held_keys))
            xt, yt, wt, st, pt, _ = self._arrays(tr)
            xv, yv, wv, sv, pv, fv = self._arrays(va)
            model = self.fit(xt, yt, wt, st, pt, (xv, yv, wv, sv, pv))
            scores = self.predict(model, xv)
            groups_model, groups_fused, start = [], [], 0
            for n in sv:
                groups_model.append((scores[start:start + n], yv[start:start + n]))
                groups_fused.append((-fv[start:start + n].astype(float), yv[start:start + n]))
                start += n
            judged = report["holdout"] = {
                "requests": va["request_id"].n_unique(), "queries": held,
                "model": graded_metrics(groups_model), "fused": graded_metrics(groups_fused)}
            if p.gate and judged["model"]["mrr"] <= judged["fused"]["mrr"]:
                return self._refused(report, started, (
                    f"no better than the fused order on {held} held-out queries"),
                    warn=False)
        self._compact(data)
        x, y, w, sizes, positions, _ = self._arrays(data)
        model = self.fit(x, y, w, sizes, positions, None)
        atomic_write_bytes(self.ctx.learned_dir / MODEL, self.dump(model))
        self.model = model
        report["deployed"] = True
        self.state.update({"judged_since_training": 0, "trainings": self.state["trainings"] + 1,
                           "features_id": self.features_id,
                           "last_training": {**report, "at": time.time()}})
        report["seconds"] = round(time.perf_counter() - started, 3)
        return report

    @staticmethod
    def _queries(data: pl.DataFrame) -> list[str]:
        """The distinct queries of the training window, by when last judged (oldest
        first)."""
        last: dict[str, int] = {}
        for i, key in enumerate(data.group_by("request_id", maintain_order=True)
                                .agg(pl.col("query_key").first())["query_key"].to_list()):
            last[key] = i
        return sorted(last, key=last.__getitem__)

    def _refused(self, report: dict[str, Any], started: float, reason: str,
                 warn: bool = True) -> dict[str, Any]:
        """A retraining that does not deploy: why, and a warning when data is thin."""
        report.update(deployed=False, reason=reason)
        if warn:
            report["warning"] = reason
            log.warning("ranker '%s' keeps serving %s: %s", self.ctx.node_id,
                        "its model" if self.model is not None else "the fused order", reason)
        self.state.update({"judged_since_training": 0,
                           "last_training": {**report, "at": time.time()}})
        report["seconds"] = round(time.perf_counter() - started, 3)
        return report

    def _compact(self, window: pl.DataFrame, most_parts: int = 32) -> None:
        """Rewrite the examples as one part holding the training window once they span
        more than ``most_parts`` parts (the new part is written before the old go)."""
        parts = self.examples.parts()
        if len(parts) <= most_parts:
            return
        self.examples.append_frame(window.select(list(EXAMPLES)))
        for old in parts:
            old.unlink(missing_ok=True)

    def _save(self) -> None:
        atomic_write_json(self.ctx.learned_dir / STATE,
                          {"state": self.state, "profiles": self.profiles.to_json(),
                           "features": self.builder.names})

    def explain(self) -> dict[str, Any]:
        """What the ranker learned so far (state, feature names, last training)."""
        return {"trained": self.model is not None, "features": self.builder.names, **self.state}

