"""Learning from silence: the spec's feedback.attribution_window (ltrr.feedback.silence).

A decision that gets no event within the window is learned as reward 0 (minus its costs)
once the window closed — by `ltrr feedback`, `ltrr train` (own log or another's), and the
same way in off-policy evaluation; an event logged after the window is not its reward; an
`abandon` event (no entity) closes a decision at once.
"""

from __future__ import annotations

import contextlib
import json
import time

import polars as pl
import pytest
from conftest import ListArm, list_plan, plugin

from ltrr.cli import main
from ltrr.errors import RunError
from ltrr.feedback.events import EVENT_SCHEMA, read_events
from ltrr.feedback.ingest import ingest
from ltrr.feedback.train import train
from ltrr.ope.log import ope_report
from ltrr.registry import build_registry
from ltrr.runtime.pipeline import Pipeline
from ltrr.runtime.workspace import Workspace
from ltrr.types import Query


@pytest.fixture()
def registry():
    return build_registry(extra=[("listed", plugin(ListArm))])


@pytest.fixture()
def make_plan(tmp_path, registry):
    pl.DataFrame({"id": [f"a{i}" for i in range(3)]}).write_parquet(tmp_path / "c.parquet")

    def _make(folder: str = "p", window: str | None = "60", cost: float = 0.0):
        return list_plan(tmp_path / folder, registry,
                         f"{{use: epsilon_greedy, budget: 4, with: {{step: 2, reward: "
                         f"{{cost_per_candidate: {cost}}}}}}}", k=4,
                         extra=f"feedback: {{attribution_window: {window}}}" if window else "")

    return _make


@contextlib.contextmanager
def logged_ago(seconds: float):
    """Decisions and log appends made inside are stamped ``seconds`` in the past: a
    window can have closed without the test waiting on the clock."""
    import ltrr.parquet_log
    import ltrr.runtime.pipeline

    class Past:
        def __getattr__(self, name):
            return getattr(time, name)

        def time(self):
            return time.time() - seconds

        def time_ns(self):
            return time.time_ns() - int(seconds * 1e9)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ltrr.runtime.pipeline, "time", Past())
        mp.setattr(ltrr.parquet_log, "time", Past())
        yield


def serve(plan, registry, n: int, prefix: str = "r"):
    with Pipeline(plan, registry=registry) as p:
        return p.run_batch([Query(f"{prefix}{i}", f"query {i}") for i in range(n)])


def clicks(decisions, type_: str = "click"):
    rows = [{"event_id": f"e-{d.request_id}", "request_id": d.request_id, "user_id": None,
             "entity_id": d.ranking[0].entity_id, "type": type_, "position": 1,
             "timestamp": time.time(), "query": None} for d in decisions]
    return pl.DataFrame(rows, schema=EVENT_SCHEMA)


def no_events():
    return EVENT_SCHEMA.to_frame()


def learned(plan, registry) -> int:
    ws = Workspace(plan)
    try:
        return ws.opened("policy").learned
    finally:
        ws.close()


def test_a_silent_decision_is_learned_as_zero_once_its_window_closed(make_plan, registry):
    plan = make_plan(cost=0.25)
    decisions = serve(plan, registry, 5)
    report = ingest(plan, clicks(decisions[:2]))          # the window is still open
    assert report["learners"]["policy"]["learned"] == 2
    assert learned(plan, registry) == 2
    later = time.time() + 61.0
    report = ingest(plan, no_events(), now=later)
    stats = report["learners"]["policy"]
    assert stats["silence"]["closed"] == 5 and stats["silence"]["silent"] == 3
    assert stats["silence"]["learned"] == 3
    assert stats["silence"]["mean_reward"] == pytest.approx(-0.25 * 4)   # 0 minus costs
    assert learned(plan, registry) == 5
    # closed once: the next ingestion learns nothing again
    report = ingest(plan, no_events(), now=later + 10)
    assert "policy" not in report["learners"]
    assert learned(plan, registry) == 5


def test_without_a_window_silent_decisions_teach_nothing(make_plan, registry):
    plan = make_plan(window=None)
    decisions = serve(plan, registry, 5)
    ingest(plan, clicks(decisions[:2]), now=time.time() + 1e6)
    assert learned(plan, registry) == 2


def test_an_event_logged_after_the_window_is_not_the_decisions_reward(make_plan, registry):
    plan = make_plan(window="60")
    with logged_ago(120):
        decisions = serve(plan, registry, 3)
    report = ingest(plan, clicks(decisions[:1]))          # logged now: too late
    stats = report["learners"]["policy"]
    assert stats["late_events"] == 1
    # the late click is not a reward: all three decisions are learned as silent
    assert stats["silence"]["silent"] == 3 and stats["learned"] == 0
    assert learned(plan, registry) == 3


def test_an_abandon_event_closes_its_decision_at_once(make_plan, registry, tmp_path):
    plan = make_plan()
    decisions = serve(plan, registry, 2)
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"request_id": decisions[0].request_id, "type": "abandon"})
                    + "\n")
    events = read_events(path, plan.model.feedback.weights)
    assert events["entity_id"].to_list() == [None]
    report = ingest(plan, events)
    assert report["learners"]["policy"]["learned"] == 1
    assert report["learners"]["policy"]["mean_reward"] == 0.0
    report = ingest(plan, no_events(), now=time.time() + 61.0)
    # the abandoned decision is not learned a second time as silent
    assert report["learners"]["policy"]["silence"]["silent"] == 1
    assert learned(plan, registry) == 2


def test_an_event_without_entity_or_request_is_refused_where_it_is(make_plan, tmp_path):
    plan = make_plan()
    path = tmp_path / "events.jsonl"
    path.write_text('{"entity_id": "a1", "type": "click"}\n{"type": "abandon"}\n')
    with pytest.raises(RunError) as err:
        read_events(path, plan.model.feedback.weights)
    assert err.value.where.line == 2 and err.value.field == "entity_id"
    assert "request_id" in err.value.hint


def test_train_replays_silence_of_another_folders_log(make_plan, registry):
    logging_plan = make_plan("logger")
    decisions = serve(logging_plan, registry, 4)
    ingest(logging_plan, clicks(decisions[:1]))
    fresh = make_plan("fresh")
    # nothing closed yet: only the click is learned
    report = train(fresh, logging_plan.spec.state_dir)
    assert report["learners"]["policy"]["learned"] == 1
    assert "silence" not in report["learners"]["policy"]


def test_train_learns_silence_once_the_window_closed(make_plan, registry):
    logging_plan = make_plan("logger", window="60")
    with logged_ago(120):                 # served and answered two minutes ago
        decisions = serve(logging_plan, registry, 4)
        ingest(logging_plan, clicks(decisions[:1]))
    fresh = make_plan("fresh", window="60")
    report = train(fresh, logging_plan.spec.state_dir)
    stats = report["learners"]["policy"]
    assert stats["learned"] == 1 and stats["silence"]["silent"] == 3
    again = train(fresh, logging_plan.spec.state_dir)
    assert again["learners"]["policy"] is None          # a replay adds nothing


def test_ope_rewards_silence_as_the_policy_learns_it(make_plan, registry):
    plan = make_plan(window="60", cost=0.25)
    with logged_ago(120):
        decisions = serve(plan, registry, 4)
        ingest(plan, clicks(decisions[:1]))
    ws = Workspace(plan)
    try:
        report = ope_report(plan, plan.spec.state_dir, ws.opened("policy"))
    finally:
        ws.close()
    assert report["open_decisions"] == 0 and report["late_events"] == 0
    assert report["decisions"] == 4 and report["without_reward"] == 0
    # the logging policy's own value: one click (1 - 1) and three silences (0 - 1)
    assert report["logged_value"] == pytest.approx((0.0 - 3.0) / 4)


def test_ope_leaves_out_decisions_whose_window_is_open(make_plan, registry):
    plan = make_plan(window="1d")
    decisions = serve(plan, registry, 3)
    ingest(plan, clicks(decisions))
    ws = Workspace(plan)
    try:
        with pytest.raises(RunError, match="window"):
            ope_report(plan, plan.spec.state_dir, ws.opened("policy"))
    finally:
        ws.close()


def test_the_window_is_validated_at_its_line(tmp_path):
    spec = tmp_path / "s.yaml"
    pl.DataFrame({"id": ["a"]}).write_parquet(tmp_path / "c.parquet")
    spec.write_text("name: t\ncatalog: {path: c.parquet}\narms: [{id: x, use: bm25}]\n"
                    "policy: {use: static, budget: 4}\nfeedback:\n  attribution_window: soon\n")
    assert main(["validate", str(spec)]) == 1
