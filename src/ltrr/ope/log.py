"""OPE of a pipeline's policy on a logged state folder: decisions and events read,
rewards joined, the target policy's probabilities computed (``ltrr evaluate --log``)."""


from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltrr.errors import RunError, StateError
from ltrr.ope.estimators import estimate_value
from ltrr.ope.protocols import LoggedPmfPolicy, PlayableActionsPolicy, RewardingPolicy
from ltrr.ope.reward_model import allocation_features
from ltrr.spec import DECISIONS_DIR, EVENTS_DIR
from ltrr.types import action_key, allocation_of

if TYPE_CHECKING:
    import polars as pl

    from ltrr.compiler import Plan


def _loads(text: str | None, default: Any) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _target_from_policy(policy: Any, decisions: "pl.DataFrame", features: list[dict],
                        space: list[str], node: str | None) -> tuple[list[dict[str, float]], str]:
    """The candidate policy's pmf per logged decision, as ``{action key: p}`` rows.

    A :class:`PlayableActionsPolicy`'s actions are appended to ``space`` first, so
    ``pmf_logged`` is asked about its whole pmf, never-logged allocations included."""
    if isinstance(policy, LoggedPmfPolicy):
        if isinstance(policy, PlayableActionsPolicy):
            known = set(space)
            for alloc in policy.playable_actions():
                key = action_key(alloc)
                if key not in known:
                    known.add(key)
                    space.append(key)
        allocs = [allocation_of(a) for a in space]
        ids = decisions["request_id"].to_list()
        rows = []
        for i, f in enumerate(features):
            probs = np.asarray(policy.pmf_logged(f, allocs), dtype=float).reshape(-1)
            where = f"decision {i} (request {ids[i]!r})"
            if probs.size != len(space):
                raise RunError(f"pmf_logged returned {probs.size} probabilities for "
                               f"{len(space)} actions ({where})", node=node,
                               hint="return one probability per action, in order")
            if not np.all(np.isfinite(probs)) or np.any(probs < 0):
                raise RunError(f"pmf_logged returned a negative or non-finite probability "
                               f"({where})", node=node, field="pmf_logged")
            total = float(probs.sum())
            if abs(total - 1) > 1e-6:
                raise RunError(
                    f"pmf_logged gives {where} a total probability of {total:.6g} over the "
                    f"{len(space)} actions OPE knows", node=node, field="pmf_logged",
                    hint="return the policy's true probabilities, and list every allocation "
                    "it can play in playable_actions() (ltrr.ope.PlayableActionsPolicy) so "
                    "its mass on never-logged allocations is counted")
            rows.append({a: float(p) for a, p in zip(space, probs) if p})
        return rows, "pmf_logged"
    choose = getattr(policy, "choose_batch", None)
    if choose is None:
        raise RunError("the policy to evaluate has neither pmf_logged() nor choose_batch()",
                       node=node, hint="implement ltrr.ope.LoggedPmfPolicy.pmf_logged")
    from ltrr.types import PolicyContext, Query, Slot

    needed = {"request_id", "query", "user_id", "context", "slots"}
    if not needed <= set(decisions.columns):
        raise RunError("the decisions lack the columns to rebuild the policy's contexts: "
                       + ", ".join(sorted(needed - set(decisions.columns))), node=node,
                       hint="pass whole decision-log rows, or give the policy pmf_logged()")
    contexts = [PolicyContext(Query(r["request_id"], r["query"] or "", r["user_id"],
                                    _loads(r["context"], {}) or {}),
                              [Slot(**s) for s in (r["slots"] or [])])
                for r in decisions.select(sorted(needed)).iter_rows(named=True)]
    rows = []
    for start in range(0, len(contexts), 1024):
        for action in choose(contexts[start:start + 1024]):
            pmf = action.pmf or [(action.allocation, 1.0)]
            row: dict[str, float] = {}
            for alloc, p in pmf:
                key = action_key(alloc)
                row[key] = row.get(key, 0.0) + float(p)
            rows.append(row)
    return rows, "choose_batch"


def evaluate_log(plan: "Plan | None", candidate_policy: Any, decisions: "pl.DataFrame",
                 rewards: "pl.DataFrame", *, missing_reward: float | None = 0.0,
                 **options: Any) -> dict[str, Any]:
    """OPE of ``candidate_policy`` on logged ``decisions`` with per-request ``rewards``.

    ``decisions`` are decision-log rows (``request_id``, ``allocation``, ``probability``,
    ``pmf``, ``action_features``; plus ``query``/``user_id``/``context``/``slots`` for
    policies without ``pmf_logged``). ``rewards`` has ``request_id`` and ``reward``; a
    decision without a reward row gets ``missing_reward`` (``None``: dropped). The action
    space is every allocation in the logged pmfs plus any the candidate plays
    (:class:`PlayableActionsPolicy`, or the pmfs ``choose_batch`` returns). The
    candidate's probabilities come from ``pmf_logged(features, actions)``
    (:class:`LoggedPmfPolicy`) when it has one, else from ``choose_batch`` on contexts
    rebuilt from the log. ``options`` go to :func:`estimate_value`.
    """
    import polars as pl

    node = plan.policy.id if plan is not None else getattr(
        getattr(candidate_policy, "ctx", None), "node_id", None)
    if decisions.height == 0:
        raise RunError("the decision log is empty: nothing to evaluate", node=node,
                       hint="serve queries with the logging policy first (ltrr run, "
                       "without --no-log)")
    for c in ("request_id", "allocation", "probability"):
        if c not in decisions.columns:
            raise RunError(f"decisions lack the column '{c}'", field=c,
                           hint="pass rows of the decision log")
    if not {"request_id", "reward"} <= set(rewards.columns):
        raise RunError("rewards need the columns request_id and reward", field="rewards")
    rewards = (rewards.select(pl.col("request_id").cast(pl.String),
                              pl.col("reward").cast(pl.Float64))
               .group_by("request_id").agg(pl.col("reward").max()))
    decisions = decisions.join(rewards.rename({"reward": "_reward"}), on="request_id",
                               how="left")
    no_reward = int(decisions["_reward"].null_count())
    if missing_reward is None:
        decisions = decisions.filter(pl.col("_reward").is_not_null())
        if decisions.height == 0:
            raise RunError("no logged decision has a reward", field="rewards",
                           hint="ingest feedback for the logged requests (ltrr feedback)")
    else:
        decisions = decisions.with_columns(pl.col("_reward").fill_null(missing_reward))

    logged, logging_pmf, features = [], [], []
    space: list[str] = []
    seen: set[str] = set()
    has_pmf = "pmf" in decisions.columns
    has_feat = "action_features" in decisions.columns
    for r in decisions.iter_rows(named=True):
        alloc = {s["arm"]: s["k"] for s in (r["allocation"] or [])} \
            if isinstance(r["allocation"], list) else dict(r["allocation"] or {})
        key = action_key(alloc)
        logged.append(key)
        pmf_row: dict[str, float] = {}
        for pair in (_loads(r["pmf"], []) if has_pmf else []) or []:
            k = action_key(pair[0])
            pmf_row[k] = pmf_row.get(k, 0.0) + float(pair[1])
        if not pmf_row:
            pmf_row = {key: float(r["probability"] or 0.0)}
        logging_pmf.append(pmf_row)
        for k in (key, *pmf_row):
            if k not in seen:
                seen.add(k)
                space.append(k)
        feat = _loads(r["action_features"], {}) if has_feat else {}
        features.append(feat if isinstance(feat, dict) else {})

    target, source = _target_from_policy(candidate_policy, decisions, features, space, node)
    report = estimate_value(logged, decisions["probability"].to_list(),
                            decisions["_reward"].to_list(), target, actions=space,
                            contexts=features, logging_pmf=logging_pmf,
                            action_features=allocation_features, **options)
    report.update({
        "policy": getattr(candidate_policy, "name", type(candidate_policy).__name__),
        "node": node, "target_pmf": source, "decisions": decisions.height,
        "without_reward": no_reward, "missing_reward": missing_reward,
    })
    return report


def default_rewards(interactions: "pl.DataFrame", decisions: "pl.DataFrame") -> "pl.DataFrame":
    """Reward per decision when the policy defines none: max over its events of
    ``weight * [entity in the candidate set]``; 0 for decisions without events."""
    import polars as pl

    per = (interactions.filter(pl.col("request_id").is_not_null())
           .group_by("request_id")
           .agg((pl.col("weight").fill_null(0.0)
                 * pl.col("in_candidates").cast(pl.Float64)).max().alias("reward")))
    return (decisions.select("request_id").unique()
            .join(per, on="request_id", how="left")
            .with_columns(pl.col("reward").fill_null(0.0)))


def ope_report(plan: "Plan", log_dir: Path, policy_component: Any, *,
               rewards: "pl.DataFrame | None" = None, **options: Any) -> dict[str, Any]:
    """OPE of ``policy_component`` on the decisions and events logged under ``log_dir``.

    ``log_dir`` is a pipeline state folder (with ``decisions/`` and ``events/``) or a
    decisions folder itself. Rewards: ``rewards`` when given, else the policy's own
    ``rewards(interactions)`` (:class:`RewardingPolicy`), else :func:`default_rewards`
    with the spec's feedback weights. With the spec's ``feedback.attribution_window``
    the decisions are those whose window closed, events logged after it do not count, and
    a silent decision's reward is the policy's for no event (0 minus its costs) — what
    the policy learns. ``options`` go to :func:`evaluate_log`.
    """
    import polars as pl

    from ltrr.feedback.events import EventLog
    from ltrr.feedback.interactions import entity_types, interactions
    from ltrr.feedback.silence import late_event_ids, silence_events
    from ltrr.runtime.decision_log import DecisionLog

    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise StateError(f"log folder {log_dir} does not exist", field="--log",
                         hint="pass the pipeline's state folder (the one holding decisions/)")
    dec_dir = log_dir / DECISIONS_DIR if (log_dir / DECISIONS_DIR).is_dir() else log_dir
    dlog = DecisionLog(dec_dir)
    if not dlog.parts():
        raise StateError(f"no decision log under {log_dir}", field="--log",
                         hint="expected decisions/part-*.parquet: serve queries first "
                         "(ltrr run without --no-log), or point at the right folder")
    try:
        decisions = dlog.read()
    except Exception as exc:   # unreadable or foreign parquet parts
        raise StateError(f"cannot read the decision log under {dec_dir}: {exc}",
                         field="--log") from exc
    source = "given"
    window = plan.model.feedback.attribution_window
    open_decisions = late = 0
    if window is not None and "timestamp" in decisions.columns:
        # as the policy learns: a decision counts once its window closed, silent or not
        closed = decisions["timestamp"] <= time.time() - window
        open_decisions = int((~closed).sum())
        decisions = decisions.filter(closed)
        if decisions.height == 0 and open_decisions:
            raise RunError(f"none of the {open_decisions} logged decisions has reached the "
                           f"end of its attribution window ({window:g} s) yet",
                           field="feedback.attribution_window",
                           hint="evaluate once the window has passed: until then a silent "
                                "decision may still get its events")
    if rewards is None:
        elog = EventLog(log_dir / EVENTS_DIR)
        events = elog.read_pieces(elog.pieces(), logged_at=True)
        weights = plan.model.feedback.weights
        if window is not None:
            late_ids = late_event_ids(events, decisions, window)
            late = late_ids.len()
            events = events.filter(~pl.col("event_id").is_in(late_ids.implode()))
            answered = events["request_id"].drop_nulls().unique().implode()
            silent = decisions.filter(~pl.col("request_id").is_in(answered))
            events = pl.concat([events.drop("logged_at"), silence_events(silent)],
                               how="vertical_relaxed")
        joined = interactions(events, decisions, weights, entity_types(plan))
        if isinstance(policy_component, RewardingPolicy):
            rewards, source = policy_component.rewards(joined), "policy"
        else:
            rewards, source = default_rewards(joined, decisions), "feedback weights"
    report = evaluate_log(plan, policy_component, decisions, rewards, **options)
    report.update({"log": str(log_dir), "rewards_from": source})
    if window is not None:
        report.update({"attribution_window_s": window, "open_decisions": open_decisions,
                       "late_events": late})
    return report
