"""The event log's id index: an append is checked against it, not against the whole log,
and it stays true to the log through crashes, compaction and quarantines."""

from __future__ import annotations

import json

import polars as pl
import pytest

from ltrr.feedback.events import EVENT_SCHEMA, EventLog, LoggedIds, quarantine_invalid
from ltrr.feedback.id_index import IdIndex


def events(ids, ts: float = 1.7e9) -> pl.DataFrame:
    return pl.DataFrame([{"event_id": i, "entity_id": "e", "type": "click", "timestamp": ts}
                         for i in ids], schema_overrides={"timestamp": pl.Float64}).select(
        [pl.col(k).cast(t) if k in ("event_id", "entity_id", "type", "timestamp")
         else pl.lit(None, dtype=t).alias(k) for k, t in EVENT_SCHEMA.items()])


def logged(log: EventLog) -> list[str]:
    return sorted(log.read_pieces(log.pieces())["event_id"].to_list())


def manifest(log: EventLog) -> dict:
    return json.loads((log.directory / "ids" / "manifest.json").read_text())


def test_ids_already_logged_are_dropped_by_the_index(tmp_path):
    log = EventLog(tmp_path / "events")
    assert log.append_new(events(["a", "b"])).height == 2
    fresh = log.append_new(events(["b", "c", "c", "d"]))
    assert fresh["event_id"].to_list() == ["c", "d"]
    assert logged(log) == ["a", "b", "c", "d"]
    assert manifest(log)["count"] == 2 and sum(n for _, n in manifest(log)["runs"]) == 4


def test_runs_are_merged_so_a_long_log_keeps_few(tmp_path):
    log = EventLog(tmp_path / "events")
    known = LoggedIds()
    for n in range(64):
        log.append_new(events([f"{n}-{i}" for i in range(10)]), known)
    runs = manifest(log)["runs"]
    assert sum(size for _, size in runs) == 640 and len(runs) <= 7
    assert sorted(p.name for p in (log.directory / "ids").glob("run-*")) == \
        sorted(f"{r}.{h}.npy" for r, _ in runs for h in ("h1", "h2"))   # no leftovers
    assert log.append_new(events(["0-0", "63-9", "new"]), known)["event_id"].to_list() == \
        ["new"]


def test_a_part_written_without_the_index_is_covered_by_the_next_append(tmp_path):
    """A writer that stopped between its part and the index (a crash), or an older ltrr
    that knew no index: the next append reads that part."""
    log = EventLog(tmp_path / "events")
    log.append_new(events(["a"]))
    log.append_frame(events(["b", "c"]))             # the index does not know these
    assert log.append_new(events(["b", "c", "d"]))["event_id"].to_list() == ["d"]
    assert manifest(log)["count"] == 3


def test_an_index_of_another_polars_hash_is_rebuilt(tmp_path):
    log = EventLog(tmp_path / "events")
    log.append_new(events(["a", "b"]))
    m = manifest(log)
    m["hasher"] = "polars-0.0.0"
    (log.directory / "ids" / "manifest.json").write_text(json.dumps(m))
    assert log.append_new(events(["a", "z"]))["event_id"].to_list() == ["z"]
    assert manifest(log)["hasher"] != "polars-0.0.0"


def test_compaction_keeps_the_index_and_its_ids(tmp_path):
    log = EventLog(tmp_path / "events")
    for n in range(6):
        log.append_new(events([f"{n}"]))
    before = manifest(log)
    assert log.compact(max_parts=2, small_bytes=10**9, merged_bytes=10**9)
    assert len(log.parts()) < 6
    assert log.append_new(events(["3", "x"]))["event_id"].to_list() == ["x"]
    after = manifest(log)
    assert after["count"] == before["count"] + 1          # covered, not rebuilt


def test_a_quarantined_part_can_be_sent_again(tmp_path):
    """Its rows left the log: the index is rebuilt from what remains, as the log was."""
    log = EventLog(tmp_path / "events")
    log.append_new(events(["a"]))
    log.append_new(events(["b"]))
    damaged = log.parts()[-1]
    log.quarantine(damaged, "test")
    assert log.append_new(events(["a", "b"]))["event_id"].to_list() == ["b"]
    assert logged(log) == ["a", "b"]


def test_events_quarantined_for_their_timestamp_can_be_sent_again_corrected(tmp_path):
    log = EventLog(tmp_path / "events")
    log.append_new(events(["ok"]))
    log.append_new(events(["bad"], ts=4.1e9))          # far in the future
    assert quarantine_invalid(log, max_future_s=3600, now=1.7e9 + 60)
    assert log.append_new(events(["bad", "ok"]))["event_id"].to_list() == ["bad"]
    assert logged(log) == ["bad", "ok"]


def test_an_unreadable_manifest_is_rebuilt(tmp_path):
    log = EventLog(tmp_path / "events")
    log.append_new(events(["a"]))
    (log.directory / "ids" / "manifest.json").write_text("{not json")
    assert log.append_new(events(["a", "b"]))["event_id"].to_list() == ["b"]


@pytest.mark.parametrize("n", [1, 1000])
def test_known_tells_each_id(tmp_path, n):
    log = EventLog(tmp_path / "events")
    ids = [f"id-{i}" for i in range(n)]
    log.append_new(events(ids))
    index = IdIndex(log)
    index.sync()
    asked = pl.Series(ids[::2] + [f"other-{i}" for i in range(n)])
    assert index.known(asked).tolist() == [True] * len(ids[::2]) + [False] * n


def test_a_damaged_new_part_is_quarantined_once_not_rescanned_on_every_append(tmp_path,
                                                                            monkeypatch):
    log = EventLog(tmp_path / "events")
    log.append_new(events(["a"]))
    other = EventLog(tmp_path / "other")
    other.append_new(events(["lost"]))
    (part,) = other.parts()
    data = part.read_bytes()
    (log.directory / part.name).write_bytes(data[: len(data) // 2])   # damaged, moved in
    assert log.append_new(events(["b"]))["event_id"].to_list() == ["b"]
    assert [q["part"].rsplit("/", 1)[-1] for q in log.quarantined()] == [part.name]
    assert manifest(log)["count"] == len(log.pieces()) == 2

    def rebuild(*_):
        raise AssertionError("rebuilt from the whole log")

    monkeypatch.setattr(IdIndex, "_rebuild", rebuild)
    assert log.append_new(events(["c", "a"]))["event_id"].to_list() == ["c"]
    assert manifest(log)["count"] == 3
