"""Event and context validation: one timestamp rule for files, HTTP and learners; feedback
files that once raised tracebacks; learners that a bad value cannot poison (issue 10,
items 4, 10 and 14)."""

from __future__ import annotations

import json
import math
import time

import polars as pl
import pytest

from ltrr.errors import RunError
from ltrr.feedback.events import EVENT_SCHEMA, read_events
from ltrr.timestamps import DEFAULT_MAX_FUTURE_S, check_timestamp

WEIGHTS = {"click": 1.0, "play": 1.0, "skip": -0.5}
YEAR = 365 * 86400.0


def _jsonl(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD = '{"entity_id": "a", "type": "click", "timestamp": 1700000000}'


# --- the timestamp rule -------------------------------------------------------------------

@pytest.mark.parametrize("value,reason", [
    (math.nan, "finite"), (math.inf, "finite"), (-math.inf, "finite"),
    (1e300, "future"), (-1.0, "1970"), (10 ** 400, "finite"),
    ("9999-12-31T23:59:59Z", "future"), ("0001-01-01T00:00:00+01:00", "1970"),
])
def test_the_timestamp_rule_refuses_unsafe_values(value, reason):
    with pytest.raises(ValueError) as err:
        check_timestamp(value)
    assert reason in str(err.value)


def test_the_timestamp_rule_allows_a_configurable_skew():
    now = time.time()
    assert check_timestamp(now + DEFAULT_MAX_FUTURE_S - 60) == pytest.approx(
        now + DEFAULT_MAX_FUTURE_S - 60)
    with pytest.raises(ValueError, match="feedback.max_future_s"):
        check_timestamp(now + 2 * YEAR)
    assert check_timestamp(now + 2 * YEAR, max_future=3 * YEAR) > now
    assert check_timestamp(0) == 0.0 and check_timestamp("2024-01-02T03:04:05Z") > 0


# --- feedback files (item 4 and 14) -------------------------------------------------------

BAD_TIMESTAMP_LINES = [
    '{"entity_id": "a", "type": "click", "timestamp": NaN}',
    '{"entity_id": "a", "type": "click", "timestamp": Infinity}',
    '{"entity_id": "a", "type": "click", "timestamp": -Infinity}',
    '{"entity_id": "a", "type": "click", "timestamp": 1e300}',
    '{"entity_id": "a", "type": "click", "timestamp": 1' + "0" * 400 + '}',
    '{"entity_id": "a", "type": "click", "timestamp": -5}',
    '{"entity_id": "a", "type": "click", "timestamp": "2100-01-01T00:00:00Z"}',
]


@pytest.mark.parametrize("line", BAD_TIMESTAMP_LINES)
def test_bad_timestamps_in_jsonl_are_located_errors(tmp_path, line):
    path = _jsonl(tmp_path / "e.jsonl", [GOOD, line])
    with pytest.raises(RunError) as err:
        read_events(path, WEIGHTS)
    assert f"{path}:2" in str(err.value) and "field 'timestamp'" in str(err.value)


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300, time.time() + 3 * YEAR, -1.0],
                         ids=["nan", "inf", "1e300", "in-3-years", "negative"])
def test_bad_timestamps_in_parquet_are_located_errors(tmp_path, value):
    path = tmp_path / "e.parquet"
    pl.DataFrame({"entity_id": ["a", "b", "c"], "type": ["click"] * 3,
                  "timestamp": [1.7e9, 1.7e9, value]}).write_parquet(path)
    with pytest.raises(RunError) as err:
        read_events(path, WEIGHTS)
    assert f"{path} row 3" in str(err.value) and "field 'timestamp'" in str(err.value)


def test_the_skew_is_a_reading_option(tmp_path):
    ahead = time.time() + 10 * 86400
    path = _jsonl(tmp_path / "e.jsonl", [GOOD, json.dumps(
        {"entity_id": "a", "type": "click", "timestamp": ahead})])
    with pytest.raises(RunError, match="field 'timestamp'"):
        read_events(path, WEIGHTS)
    assert read_events(path, WEIGHTS, max_future_s=30 * 86400)["timestamp"][1] == ahead


def test_a_line_nested_100000_deep_is_a_located_error(tmp_path):
    deep = '{"entity_id": "a", "type": "click", "query": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = _jsonl(tmp_path / "e.jsonl", [GOOD, deep])
    with pytest.raises(RunError) as err:
        read_events(path, WEIGHTS)
    assert f"{path}:2" in str(err.value) and "nested" in str(err.value)


def test_a_5000_digit_number_is_a_located_error(tmp_path):
    path = _jsonl(tmp_path / "e.jsonl", [GOOD, '{"entity_id": ' + "7" * 5000
                                         + ', "type": "click"}'])
    with pytest.raises(RunError) as err:
        read_events(path, WEIGHTS)
    assert f"{path}:2" in str(err.value)


@pytest.mark.parametrize("field", ["entity_id", "query", "user_id", "request_id"])
def test_a_lone_surrogate_is_refused_not_read_as_nul(tmp_path, field):
    row = {"entity_id": "a", "type": "click", "timestamp": 1, field: "x@y"}
    line = json.dumps(row).replace("@", "\\ud800")
    path = _jsonl(tmp_path / "e.jsonl", [GOOD, line])
    with pytest.raises(RunError) as err:
        read_events(path, WEIGHTS)
    assert f"{path}:2" in str(err.value) and f"field '{field}'" in str(err.value)
    assert "surrogate" in str(err.value)


def test_escaped_surrogate_pairs_read_as_their_character(tmp_path):
    path = _jsonl(tmp_path / "e.jsonl", [
        '{"entity_id": "\\ud83c\\udfb8", "type": "click", "timestamp": 1, '
        '"query": "a\\u0000b"}'])
    got = read_events(path, WEIGHTS)
    assert got["entity_id"].to_list() == ["\U0001F3B8"]
    assert got["query"].to_list() == ["a\x00b"]


def test_events_from_rows_apply_the_same_rule():
    from ltrr.errors import Location
    from ltrr.feedback.events import events_from_rows

    for value in (math.nan, math.inf, 1e300, time.time() + YEAR, "\ud800"):
        with pytest.raises(RunError) as err:
            events_from_rows([{"entity_id": "a", "type": "click", "timestamp": value}],
                             lambda i: Location(f"request field events[{i}]"), WEIGHTS)
        assert "events[0]" in str(err.value) and "field 'timestamp'" in str(err.value)
    ok = events_from_rows([{"entity_id": "a", "type": "click", "timestamp": 5}],
                          lambda i: Location("x"), WEIGHTS)
    assert ok.schema == EVENT_SCHEMA and ok["timestamp"][0] == 5.0


# --- context timestamps (item 10) ---------------------------------------------------------

@pytest.mark.parametrize("value", [1e300, -1e300, math.nan, math.inf, -math.inf, 1e20, -1e20,
                                   253402300800.0, "9999-12-31T23:59:59-01:00", 0, "garbage"])
def test_time_features_never_raise(value):
    from ltrr_plugins.policies.features import ContextFeaturizer, FeatureParams
    from ltrr.types import PolicyContext, Query

    f = ContextFeaturizer(FeatureParams(features=["time"]))
    ns = f.featurize(PolicyContext(Query("r", "x", None, {"timestamp": value}), []))
    assert ns["time"]["hour"] in ("night", "morning", "afternoon", "evening")


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300, -1e300, 10 ** 400, "not a time"])
def test_a_search_context_timestamp_out_of_range_is_refused(value):
    from pydantic import ValidationError

    from ltrr.serve.models import SearchRequest

    body = ('{"query": "x", "context": {"timestamp": %s}}'
            % (json.dumps(value) if isinstance(value, str) else
               "NaN" if value != value else "Infinity" if value == math.inf else str(value)))
    with pytest.raises(ValidationError) as err:
        SearchRequest.model_validate_json(body)
    assert err.value.errors()[0]["loc"][:2] == ("context", "timestamp")


def test_a_sane_context_timestamp_is_accepted():
    from ltrr.serve.models import SearchRequest

    for ts in ("1700000000", "1700000000.5", '"2024-01-02T03:04:05Z"'):
        req = SearchRequest.model_validate_json('{"query": "x", "context": {"timestamp": %s}}'
                                                % ts)
        assert req.context["timestamp"] is not None


# --- the spec's setting -------------------------------------------------------------------

def _spec(tmp_path, feedback: str = ""):
    pl.DataFrame({"id": ["a", "b"]}).write_parquet(tmp_path / "c.parquet")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ncatalog: {path: c.parquet}\n"
                    "arms: [{id: mem, use: memory}]\npolicy: {budget: 2}\noutput: {k: 2}\n"
                    + feedback)
    return spec


def test_feedback_max_future_s_is_the_files_skew(tmp_path):
    from ltrr.compiler import load_plan
    from ltrr.feedback.ingest import ingest_file

    two_hours = json.dumps({"entity_id": "a", "type": "click", "query": "x",
                            "timestamp": time.time() + 7200})
    path = _jsonl(tmp_path / "e.jsonl", [GOOD.replace('"click"', '"click", "query": "x"'),
                                         two_hours])
    assert ingest_file(load_plan(_spec(tmp_path)), path)["new"] == 2     # default: a day
    strict = tmp_path / "strict"
    strict.mkdir()
    with pytest.raises(RunError) as err:
        ingest_file(load_plan(_spec(strict, "feedback: {max_future_s: 3600}\n")), path)
    assert f"{path}:2" in str(err.value) and "field 'timestamp'" in str(err.value)
    assert "feedback.max_future_s" in str(err.value)


@pytest.mark.parametrize("feedback,field,message", [
    ("feedback: {max_future_s: -1}\n", "max_future_s", "greater than or equal to 0"),
    ("feedback: {max_future_s: .inf}\n", "max_future_s", "finite"),
    ("feedback: {weights: {click: .nan}}\n", "weights.click", "finite"),
    ("feedback: {weights: {click: .inf}}\n", "weights.click", "finite"),
])
def test_feedback_settings_are_finite(tmp_path, feedback, field, message):
    from ltrr.errors import SpecError
    from ltrr.spec import load_spec

    with pytest.raises(SpecError) as err:
        load_spec(_spec(tmp_path, feedback))
    assert field in str(err.value) and message in str(err.value)


# --- a log that already holds bad events (written before they were checked) --------------

def _log_unchecked(plan, rows: list[dict]):
    """Append rows to the event log as the unvalidated code once did."""
    from ltrr.feedback.ingest import event_log

    frame = pl.DataFrame([{**{k: None for k in EVENT_SCHEMA}, **r} for r in rows],
                         schema=EVENT_SCHEMA)
    return event_log(plan).append_frame(frame)


def _poisoned_log(tmp_path):
    from ltrr.compiler import load_plan

    plan = load_plan(_spec(tmp_path))
    ev = {"type": "click", "query": "x", "request_id": None}
    good = _log_unchecked(plan, [{**ev, "event_id": "g1", "entity_id": "a", "timestamp": 1.7e9},
                                 {**ev, "event_id": "b1", "entity_id": "b",
                                  "timestamp": math.inf}])
    ahead = _log_unchecked(plan, [{**ev, "event_id": "b2", "entity_id": "b",
                                   "timestamp": time.time() + 3 * YEAR},
                                  {**ev, "event_id": "g2", "entity_id": "a",
                                   "timestamp": 1.7e9 + 1}])
    return plan, good, ahead


def test_train_skips_logged_events_with_invalid_timestamps_naming_the_parts(tmp_path, caplog):
    from ltrr.feedback.train import train

    plan, first, second = _poisoned_log(tmp_path)
    with caplog.at_level("WARNING"):
        report = train(plan)
    assert report["learners"]["mem"]["learned"] == 2         # g1, g2 only
    assert first.name in caplog.text and second.name in caplog.text
    assert "2 logged events" in caplog.text and "--quarantine-invalid" in caplog.text
    from ltrr_plugins.arms.memory.store import read_pairs

    pairs = read_pairs(tmp_path / ".ltrr/t/mem.learned")[0]
    assert pairs["entity_id"].to_list() == ["a"]
    assert pairs.select(pl.col("w", "a", "t").is_finite().all()).row(0) == (True,) * 3
    assert pairs["t"][0] == 1.7e9 + 1


def test_catch_up_after_feedback_skips_them_too(tmp_path, caplog):
    from ltrr.feedback.ingest import ingest_file

    plan, first, _ = _poisoned_log(tmp_path)
    path = _jsonl(tmp_path / "e.jsonl", [GOOD.replace('"click"', '"click", "query": "y"')])
    with caplog.at_level("WARNING"):
        report = ingest_file(plan, path)
    assert report["learners"]["mem"]["learned"] == 3
    assert first.name in caplog.text


@pytest.mark.parametrize("compacted", [False, True])
def test_quarantine_invalid_moves_bad_events_out_of_the_log(tmp_path, caplog, compacted):
    from ltrr.feedback.ingest import event_log
    from ltrr.feedback.train import train

    plan, first, second = _poisoned_log(tmp_path)
    elog = event_log(plan)
    if compacted:
        assert elog.compact(max_parts=1)["parts_after"] == 1
    parts = [p.name for p in elog.parts()]
    report = train(plan, quarantine_invalid=True)
    assert sum(report["quarantined"].values()) == 2
    assert sorted(report["quarantined"]) == sorted(parts)
    assert report["learners"]["mem"]["learned"] == 2
    assert sorted(elog.read()["event_id"].to_list()) == ["g1", "g2"]
    moved = pl.read_parquet(elog.quarantine_dir / "invalid-*.parquet")
    assert sorted(moved["event_id"].to_list()) == ["b1", "b2"]
    # the appends keep their identity: each piece reads exactly its remaining rows
    elog = event_log(plan)                     # (a live reader is excluded by the lock)
    pieces = elog.pieces()
    assert [p.name for p in pieces] == [first.name, second.name]
    assert [elog.read_pieces([p])["event_id"].to_list() for p in pieces] == [["g1"], ["g2"]]
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = train(plan, quarantine_invalid=True)
    assert again["quarantined"] == {} and "invalid timestamps" not in caplog.text
    assert again["learners"]["mem"] is None        # the cursor still covers the appends


def test_quarantine_invalid_is_a_cli_flag(tmp_path):
    import os
    import subprocess
    import sys

    plan, first, _ = _poisoned_log(tmp_path)
    ltrr = os.path.join(os.path.dirname(sys.executable), "ltrr")
    done = subprocess.run([ltrr, "train", str(tmp_path / "s.yaml"), "--quarantine-invalid"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "moved 2 events with invalid timestamps" in done.stdout
