"""Runtime behaviour with small in-process arms: batching, deadlines, failures, seeds, logging."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import polars as pl
import pytest

from ltrr.compiler import compile_spec
from ltrr.hookspecs import hookimpl
from ltrr.components import Arm, Params
from ltrr.registry import build_registry
from ltrr.runtime.decision_log import DecisionLog
from ltrr.runtime.pipeline import Pipeline
from ltrr.spec import load_spec_text
from ltrr.types import Candidate, Query

CALLS: list[tuple[str, int]] = []


class ListArm(Arm):
    """Returns catalog ids in order, starting at an offset."""

    name = "list"

    class Params(Params):
        offset: int = 0

    def retrieve_batch(self, requests):
        CALLS.append((self.ctx.node_id, len(requests)))
        ids = self.ctx.catalog.ids[self.params.offset:]
        return [[Candidate(e, self.ctx.node_id, r, 1.0 / r) for r, e in enumerate(ids[:q.k], 1)]
                for q in requests]


class SlowArm(Arm):
    """Answers only once the test releases it (or after a minute): always past a tiny
    deadline, however loaded the machine."""

    name = "slow"
    release = threading.Event()
    finished = threading.Event()

    def retrieve_batch(self, requests):
        SlowArm.release.wait(60)
        SlowArm.finished.set()
        return [[Candidate("a0", self.ctx.node_id, 1, 1.0)] for _ in requests]


class NapArm(Arm):
    """Sleeps past its 1 ms deadline, then answers."""

    name = "nap"

    def retrieve_batch(self, requests):
        time.sleep(0.2)
        return [[Candidate("a9", self.ctx.node_id, 1, 1.0)] for _ in requests]


EVENTS: list[tuple[str, str]] = []


class LifecycleArm(ListArm):
    """Records open, warm and retrieve calls."""

    name = "lifecycle"

    def open(self):
        EVENTS.append(("open", self.ctx.node_id))

    def warm(self):
        EVENTS.append(("warm", self.ctx.node_id))

    def retrieve_batch(self, requests):
        EVENTS.append(("retrieve", self.ctx.node_id))
        return super().retrieve_batch(requests)


class BoomArm(Arm):
    """Always raises."""

    name = "boom"

    def retrieve_batch(self, requests):
        raise ValueError("index exploded")


class EchoSeedsArm(Arm):
    """Returns its seeds' entities, marking the seed each came from."""

    name = "echo_seeds"
    seed_types = frozenset({"candidates"})

    def retrieve_batch(self, requests):
        return [[Candidate(s.entity_id, self.ctx.node_id, r, 0.5, seed=s.entity_id)
                 for r, s in enumerate(q.seeds[:q.k], 1)] for q in requests]


PLUGIN = SimpleNamespace(ltrr_components=hookimpl(
    lambda: [ListArm, SlowArm, NapArm, LifecycleArm, BoomArm, EchoSeedsArm, UserArm,
             InlineArm]))


@pytest.fixture()
def make(tmp_path):
    pl.DataFrame({"id": [f"a{i}" for i in range(50)],
                  "name": [f"artist {i}" for i in range(50)]}).write_parquet(tmp_path / "c.parquet")
    registry = build_registry(extra=[("test-arms", PLUGIN)])

    def _make(arms_yaml: str, allocation: str, budget: int = 20, merge: str = "union",
              **options):
        text = f"""
name: t
catalog: {{path: c.parquet}}
arms:
{arms_yaml}
policy:
  budget: {budget}
  with: {{allocation: {allocation}}}
merge: {{use: {merge}}}
output: {{k: 5}}
"""
        spec = load_spec_text(text, tmp_path / "spec.yaml")
        return Pipeline(compile_spec(spec, registry), registry=registry, **options)

    return _make


def test_batch_is_passed_whole_and_results_merge_with_provenance(make):
    CALLS.clear()
    arms = """  - {id: first, use: list}
  - {id: second, use: list, with: {offset: 2}}"""
    with make(arms, "{first: 10, second: 10}") as p:
        out = p.run_batch([Query(f"r{i}", "q") for i in range(7)])
    assert sorted(CALLS) == [("first", 7), ("second", 7)]
    top = out[0].ranking
    assert len(top) == 5
    by_id = {r.entity_id: r for r in top}
    # a2 is rank 3 in 'first' and rank 1 in 'second': union keeps both sources
    assert "a2" in by_id and sorted(c.arm for c in by_id["a2"].sources) == ["first", "second"]
    assert {len(d.candidates["first"]) for d in out} == {10}


def test_slow_arm_is_dropped_with_a_note_and_the_query_still_answers(make):
    arms = """  - {id: fast, use: list}
  - {id: sleepy, use: slow, deadline_ms: 50}"""
    SlowArm.release.clear()
    SlowArm.finished.clear()
    try:
        with make(arms, "{fast: 10, sleepy: 10}") as p:
            d = p.run(Query("r1", "q"))
            # the arm is still blocked: the runtime did not wait for it past its deadline
            assert not SlowArm.finished.is_set()
    finally:
        SlowArm.release.set()
    assert [r.entity_id for r in d.ranking][:3] == ["a0", "a1", "a2"]
    assert "sleepy" not in d.candidates
    assert any("sleepy" in note and "deadline" in note for note in d.trace)
    assert d.dropped == {"sleepy": "deadline"}


def test_without_deadlines_a_slow_arm_is_waited_for(make):
    arms = """  - {id: fast, use: list}
  - {id: sleepy, use: nap, deadline_ms: 1}"""
    with make(arms, "{fast: 10, sleepy: 10}", deadlines=False) as p:
        (d,) = p.run_batch([Query("r1", "q")])
    assert [c.entity_id for c in d.candidates["sleepy"]] == ["a9"]
    assert d.trace == [] and d.dropped == {}
    with make(arms, "{fast: 10, sleepy: 10}") as p:      # the spec's deadlines: dropped
        (d,) = p.run_batch([Query("r1", "q")])
    assert "sleepy" not in d.candidates and d.dropped == {"sleepy": "deadline"}


def test_components_are_warmed_after_every_node_opened_and_before_the_first_batch(make):
    arms = """  - {id: one, use: lifecycle}
  - {id: two, use: lifecycle}"""
    EVENTS.clear()
    with make(arms, "{one: 5, two: 5}") as p:
        assert EVENTS == [("open", "one"), ("open", "two"), ("warm", "one"), ("warm", "two")]
        p.run(Query("r1", "q"))
        assert sorted(EVENTS[4:]) == [("retrieve", "one"), ("retrieve", "two")]
        EVENTS.clear()
        p.reopen(["two"])                       # a node opened afresh is warmed too
        assert EVENTS == [("open", "two"), ("warm", "two")]


def test_failing_arm_is_isolated(make):
    arms = """  - {id: ok, use: list}
  - {id: broken, use: boom}"""
    with make(arms, "{ok: 10, broken: 10}", deadlines=False) as p:
        d = p.run(Query("r1", "q"))
    assert len(d.ranking) == 5
    assert any("broken" in n and "index exploded" in n for n in d.trace)
    assert d.dropped == {"broken": "failed"}        # without deadlines, failures still drop


def test_seeded_arm_gets_upstream_candidates_even_if_upstream_not_allocated(make):
    arms = """  - {id: base, use: list}
  - {id: expand, use: echo_seeds, from: [base], seeds: 3}"""
    with make(arms, "{expand: 10}") as p:
        d = p.run(Query("r1", "q"))
    assert [c.seed for c in d.candidates["expand"]] == ["a0", "a1", "a2"]
    assert "base" not in d.candidates   # ran only to seed 'expand'
    assert all(c.arm == "expand" for r in d.ranking for c in r.sources)


def test_seeds_flow_through_a_chain_where_only_the_last_arm_is_allocated(make):
    arms = """  - {id: base, use: list}
  - {id: hop, use: echo_seeds, from: [base], seeds: 4}
  - {id: last, use: echo_seeds, from: [hop], seeds: 2}"""
    with make(arms, "{last: 10}") as p:
        d = p.run(Query("r1", "q"))
    assert [c.entity_id for c in d.candidates["last"]] == ["a0", "a1"]
    assert list(d.candidates) == ["last"]


def test_decisions_are_logged_durably_with_action_and_timings(make, tmp_path):
    arms = "  - {id: only, use: list}"
    with make(arms, "{only: 8}", merge="rrf") as p:
        p.run_batch([Query("req-1", "hello", "u1"), Query("req-2", "world")])
        p.run(Query("req-3", "again"))
        log = DecisionLog(p.log.directory).read()
    assert log["request_id"].to_list() == ["req-1", "req-2", "req-3"]
    row = log.row(0, named=True)
    assert row["user_id"] == "u1" and row["probability"] == 1.0
    assert row["allocation"] == [{"arm": "only", "k": 8}]
    assert len(row["candidates"]) == 8 and row["candidates"][0]["arm"] == "only"
    assert [r["rank"] for r in row["ranking"]] == [1, 2, 3, 4, 5]
    assert len(list(p.log.directory.glob("part-*.parquet"))) == 2
    assert not list(p.log.directory.glob(".*tmp"))


def test_framework_overhead_is_reported(make):
    with make("  - {id: only, use: list}", "{only: 8}") as p:
        d = p.run(Query("r", "q"))
    t = d.timings_ms
    assert {"policy", "only", "merge", "ranker", "total", "framework"} <= set(t)
    # one arm in one wave: its time (measured in its thread) is within the wave's, so the
    # framework's share is exactly what the components did not spend
    inside = t["policy"] + t["only"] + t["merge"] + t["ranker"]
    assert 0 < inside < t["total"]
    assert t["framework"] == pytest.approx(t["total"] - inside, abs=1e-9)


class UserArm(ListArm):
    """A list arm whose answer depends on the user (reads_user stays True)."""

    name = "user_list"

    def retrieve_batch(self, requests):
        CALLS.append((self.ctx.node_id, len(requests)))
        ids = self.ctx.catalog.ids
        return [[Candidate(ids[len(q.query.user_id or "")], self.ctx.node_id, 1, 1.0)]
                for q in requests]


def test_a_cached_arm_computes_each_request_once_and_answers_the_same(make):
    arms = """  - {id: plain, use: list, cache: 2}
  - {id: personal, use: user_list, cache: 10}
  - {id: uncached, use: list, with: {offset: 3}}"""
    CALLS.clear()
    with make(arms, "{plain: 5, personal: 1, uncached: 5}") as p:
        assert set(p.caches) == {"plain", "personal"}
        first = p.run_batch([Query("r1", "q", "u1"), Query("r2", "q", "u1")])
        again = p.run_batch([Query("r3", "q", "u1"), Query("r4", "other", "u22")])
        # plain: "q" computed once (a repeat within a batch too), then "other" only
        assert [c for c in CALLS if c[0] == "plain"] == [("plain", 1), ("plain", 1)]
        assert ("uncached", 2) in CALLS and CALLS.count(("uncached", 2)) == 2
        assert [r.entity_id for r in again[0].ranking] == [r.entity_id
                                                          for r in first[0].ranking]
        assert again[0].candidates == first[0].candidates
        # a component that reads the user is keyed by the user: u22 gets its own answer
        assert again[1].candidates["personal"][0].entity_id == "a3"
        assert first[0].candidates["personal"][0].entity_id == "a2"
        # LRU of 2 entries: "q" and "other" held; a third text evicts "q"
        p.run_batch([Query("r5", "third")])
        CALLS.clear()
        p.run_batch([Query("r6", "q", "u1")])
        assert ("plain", 1) in CALLS
        stats = p.caches["plain"].stats()
        assert stats["entries"] == 2 and stats["hits"] == 1 and stats["misses"] == 5


def test_decision_frame_keeps_every_field_including_empty_and_nested_ones():
    from ltrr.runtime.decision_log import SCHEMA, decision_frame
    from ltrr.types import Action, Decision, Ranked, Slot

    hit = Candidate("e1", "lexical", 1, 2.5, features={"bm25": 2.5}, seed="s0")
    full = Decision("r1", Query("r1", "héllo", "u1", {"device": "tv"}), "abc",
                    [Slot("tag", "rock", 0, 5, 0.9), Slot("artist", "X", 6, 7, 1.0, "e1")],
                    Action({"lexical": 5, "memory": 0}, 0.25, [({"lexical": 5}, 0.25)], 3,
                           {"f": 1.0}),
                    {"lexical": [hit, Candidate("e2", "lexical", 2, 1.0)]},
                    [Ranked(1, "e1", 0.5, [hit])], {"total": 1.5}, ["a note"], 123.0)
    empty = Decision("r2", Query("r2", ""), "abc", [], Action({}), {}, [], {}, [], 124.0)
    frame = decision_frame([full, empty])
    assert frame.schema == SCHEMA
    a, b = frame.rows(named=True)
    assert a["query"] == "héllo" and json.loads(a["context"]) == {"device": "tv"}
    assert a["slots"][1] == {"name": "artist", "value": "X", "start": 6, "end": 7,
                             "score": 1.0, "entity_id": "e1"}
    assert a["allocation"] == [{"arm": "lexical", "k": 5}, {"arm": "memory", "k": 0}]
    assert (a["action_index"], a["probability"], json.loads(a["action_features"])) == (
        3, 0.25, {"f": 1.0})
    assert a["candidates"] == [
        {"entity_id": "e1", "arm": "lexical", "rank": 1, "score": 2.5, "seed": "s0",
         "features": '{"bm25":2.5}'},
        {"entity_id": "e2", "arm": "lexical", "rank": 2, "score": 1.0, "seed": None,
         "features": None}]
    assert a["ranking"] == [{"rank": 1, "entity_id": "e1", "score": 0.5, "arms": ["lexical"]}]
    assert a["trace"] == ["a note"] and json.loads(a["timings_ms"]) == {"total": 1.5}
    assert (b["slots"], b["allocation"], b["candidates"], b["ranking"], b["trace"]) == (
        [], [], [], [], [])
    assert b["user_id"] is None and b["action_features"] is None


class InlineArm(ListArm):
    """A cheap arm that runs on the batch's own thread."""

    name = "inline_list"
    threaded = False
    threads: list[str] = []

    def retrieve_batch(self, requests):
        import threading

        InlineArm.threads.append(threading.current_thread().name)
        if self.params.offset == 99:
            time.sleep(0.05)                  # over its 1 ms-per-query deadline
        return super().retrieve_batch(requests)


def test_an_unthreaded_arm_runs_on_the_batch_thread_and_still_answers_to_its_deadline(make):
    import threading

    arms = """  - {id: pooled, use: list}
  - {id: inline, use: inline_list, with: {offset: 5}}
  - {id: late, use: inline_list, deadline_ms: 1, with: {offset: 99}}"""
    InlineArm.threads = []
    with make(arms, "{pooled: 5, inline: 5, late: 5}") as p:
        (d,) = p.run_batch([Query("r1", "q")])
    assert InlineArm.threads == [threading.current_thread().name] * 2
    assert [c.entity_id for c in d.candidates["inline"]] == [f"a{i}" for i in range(5, 10)]
    assert "pooled" in d.candidates and "late" not in d.candidates
    assert any("'late' exceeded its deadline" in t for t in d.trace)


def test_a_pipeline_that_does_not_own_the_gc_leaves_it_alone(tmp_path, monkeypatch):
    """A server holds several generations of a pipeline and owns the garbage collector
    (ltrr.serve.gc_policy): closing one of them unfroze every frozen object of the
    process, the server's too (Pipeline.close called gc.unfreeze)."""
    import gc

    from conftest import tiny_spec

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline

    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
    plan = load_plan(tiny_spec(tmp_path))
    with Pipeline(plan, log_decisions=False, own_gc=False):
        pass
    assert calls == []
    with Pipeline(plan, log_decisions=False):         # a batch job's pipeline owns it
        pass
    assert calls == ["freeze", "unfreeze"]


def test_pipeline_open_is_timed_per_node(tmp_path):
    from conftest import tiny_spec

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline

    plan = load_plan(tiny_spec(tmp_path))
    with Pipeline(plan, log_decisions=False) as pipe:
        times = pipe.open_seconds
    assert set(times) == {n.id for n in plan.nodes}
    assert all(set(t) == {"open", "warm"} and min(t.values()) >= 0 for t in times.values())
