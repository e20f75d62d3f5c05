"""The event log and learned state under several writers, damage and growth.

One learner per state folder (``ltrr feedback`` beside a running ``ltrr serve`` hands
its events to the server instead of overwriting what the server learned); damaged
event-log parts and cursors are named and quarantined, not a traceback; parts and
cursors stay bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl

LTRR = str(Path(sys.executable).with_name("ltrr"))


_KNOWN = pl.read_parquet(Path(__file__).parents[1] / "examples/data/lastfm/artists.parquet",
                         columns=["artist_id"])["artist_id"].cast(pl.String).head(50).to_list()


def _organic(tag: str, n: int) -> list[dict]:
    """``n`` organic events (query + catalog entity, no request) with distinct ids."""
    return [{"event_id": f"{tag}-{i}", "entity_id": _KNOWN[i % len(_KNOWN)], "type": "click",
             "query": f"{tag} query {i % 7}", "user_id": "u"} for i in range(n)]


def _memory_events(spec: Path) -> int:
    """Events the memory arm's learned state holds (0 before it learned anything)."""
    from ltrr_plugins.arms.memory.store import read_pairs

    pairs = read_pairs(spec.parent / "state" / "memory.learned")[0]
    return 0 if pairs is None else int(pairs["events"].sum())


def _wait_memory(spec: Path, want: int, server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := _memory_events(spec)) != want:
        assert got <= want, f"learned {got} events, more than the {want} sent"
        assert time.monotonic() < deadline, \
            f"memory learned {got} of {want} events\n{server.stderr[-3000:]}"
        time.sleep(0.1)


def _post(url: str, events: list[dict]) -> None:
    r = httpx.post(url + "/feedback", json={"events": events}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["new"] == len(events)


# --- item 5: one learner per state folder ---------------------------------------------------

def test_cli_feedback_beside_serve_loses_no_learned_event(serve_spec, start_server, tmp_path):
    server = start_server(serve_spec)
    first = _organic("http1", 40)
    _post(server.url, first)
    _wait_memory(serve_spec, 40, server)

    events = tmp_path / "cli.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _organic("cli", 30)))
    done = subprocess.run([LTRR, "feedback", str(serve_spec), str(events)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "30 new of 30 events logged" in done.stdout
    # the server learns: the command says so and names it
    assert f"pid {server.pid}" in done.stdout + done.stderr, done.stdout + done.stderr
    # the server learns the command's events without being told (no more HTTP feedback)
    _wait_memory(serve_spec, 70, server)

    _post(server.url, _organic("http2", 20))
    _wait_memory(serve_spec, 90, server)

    # `ltrr train` cannot learn beside the server: refused, naming it
    done = subprocess.run([LTRR, "train", str(serve_spec)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"pid {server.pid}" in done.stderr and "ltrr serve" in done.stderr, done.stderr
    assert server.stop() == 0
    assert _memory_events(serve_spec) == 90

    # with the server gone, `ltrr feedback` learns itself again
    events.write_text("".join(json.dumps(e) + "\n" for e in _organic("cli2", 5)))
    done = subprocess.run([LTRR, "feedback", str(serve_spec), str(events)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _memory_events(serve_spec) == 95


_HOLDER = """
import sys
from ltrr.state import OwnerLock
lock = OwnerLock(sys.argv[1])
assert lock.try_acquire("serve")
print("held", flush=True)
sys.stdin.read()
"""


def test_the_learner_lock_names_its_holder_and_is_freed_when_it_dies(tmp_path):
    from ltrr.feedback.learning_lock import LOCK_FILE, learning

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / LOCK_FILE)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with learning(tmp_path, "feedback") as server:
            assert server is not None and server["pid"] == holder.pid
            assert server["role"] == "serve"
    finally:
        holder.kill()                      # no release: the OS frees the lock
        holder.wait(30)
    with learning(tmp_path, "feedback") as server:
        assert server is None              # this process learns now
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (tmp_path / LOCK_FILE).read_text() == ""      # released: names nobody


def test_cli_feedback_beside_several_workers_is_learned_by_the_leader(serve_spec,
                                                                      start_server,
                                                                      tmp_path):
    server = start_server(serve_spec, "--workers", "2")
    _post(server.url, _organic("w1", 20))
    _wait_memory(serve_spec, 20, server)
    events = tmp_path / "cli.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _organic("wcli", 10)))
    done = subprocess.run([LTRR, "feedback", str(serve_spec), str(events)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "left to the server" in done.stdout and "ltrr serve" in done.stdout, done.stdout
    _wait_memory(serve_spec, 30, server)
    _post(server.url, _organic("w2", 20))             # whichever worker answers
    _wait_memory(serve_spec, 50, server)


# --- item 11: a damaged part or cursor is named, quarantined, and feedback goes on ---------

def _feedback(spec: Path, tmp_path: Path, events: list[dict]) -> subprocess.CompletedProcess:
    path = tmp_path / f"{events[0]['event_id']}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return subprocess.run([LTRR, "feedback", str(spec), str(path)], capture_output=True,
                          text=True, timeout=600)


def _log_unlearned(spec: Path, events: list[dict]) -> Path:
    """Append events to the event log without learning them (as a server would)."""
    from ltrr.feedback.events import EVENT_SCHEMA, EventLog

    log = EventLog(spec.parent / "state" / "events")
    rows = [{**e, "request_id": None, "position": None, "timestamp": time.time()}
            for e in events]
    before = set(log.parts())
    log.append_new(pl.DataFrame(rows, schema=EVENT_SCHEMA))
    (new,) = set(log.parts()) - before
    return new


def _truncate(part: Path) -> None:
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    """Damage a file's content, keeping its time (as a disk fault would)."""
    st = path.stat()
    path.write_text('{"through": "part-0001')
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _clean(done: subprocess.CompletedProcess) -> str:
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out, out
    return out


def test_damaged_part_and_cursor_are_named_and_feedback_and_train_go_on(serve_spec,
                                                                         tmp_path):
    events = serve_spec.parent / "state" / "events"
    _clean(_feedback(serve_spec, tmp_path, _organic("a", 10)))
    assert _memory_events(serve_spec) == 10
    (first,) = events.glob("part-*.parquet")

    # `ltrr train` with a damaged part pending: quarantined, named, the rest learned
    damaged = _log_unlearned(serve_spec, _organic("b", 10))
    _log_unlearned(serve_spec, _organic("c", 10))
    _truncate(damaged)
    out = _clean(subprocess.run([LTRR, "train", str(serve_spec)], capture_output=True,
                                text=True, timeout=600))
    assert damaged.name in out and "quarantine" in out, out
    assert (events / "quarantine" / damaged.name).exists()
    assert _memory_events(serve_spec) == 20

    # `ltrr feedback` with a damaged (learned) part: new events still logged and learned
    _truncate(first)
    out = _clean(_feedback(serve_spec, tmp_path, _organic("d", 10)))
    assert first.name in out and "quarantine" in out, out
    assert "10 new of 10 events logged" in out
    assert _memory_events(serve_spec) == 30
    assert sorted(p.name for p in (events / "quarantine").glob("*.parquet")) == \
        sorted([first.name, damaged.name])

    # a garbled cursor: named, moved aside, rebuilt; nothing learned twice, nothing lost
    cursor = serve_spec.parent / "state" / "memory.learned" / "cursor.json"
    _garble(cursor)
    out = _clean(_feedback(serve_spec, tmp_path, _organic("e", 5)))
    assert str(cursor) in out and "rebuilt" in out, out
    assert _memory_events(serve_spec) == 35
    assert list(cursor.parent.glob("cursor.json.damaged-*"))
    json.loads(cursor.read_text())                     # a readable cursor again


def test_damaged_part_over_http_keeps_feedback_going_and_health_degraded(serve_spec,
                                                                        start_server,
                                                                        tmp_path):
    server = start_server(serve_spec)
    _post(server.url, _organic("h1", 20))
    _wait_memory(serve_spec, 20, server)
    health = httpx.get(server.url + "/health", timeout=30).json()
    assert health["status"] == "ok" and health["problems"] == []

    # a part another process logged, damaged on disk before the server read it
    events = serve_spec.parent / "state" / "events"
    scratch = tmp_path / "scratch" / "music-serve.yaml"
    part = _log_unlearned(scratch, _organic("lost", 20))
    _truncate(part)
    os.replace(part, events / part.name)
    part = events / part.name
    _post(server.url, _organic("h2", 20))           # 200, not a 500 for every request
    _post(server.url, _organic("h3", 20))
    _wait_memory(serve_spec, 60, server)
    health = httpx.get(server.url + "/health", timeout=30).json()
    assert health["status"] == "degraded", health
    assert any(part.name in p and "quarantine" in p for p in health["problems"]), health
    assert part.name in server.stderr

    cursor = serve_spec.parent / "state" / "memory.learned" / "cursor.json"
    _garble(cursor)
    _post(server.url, _organic("h4", 20))
    _wait_memory(serve_spec, 80, server)
    health = httpx.get(server.url + "/health", timeout=30).json()
    assert any("cursor.json.damaged" in p for p in health["problems"]), health
    assert str(cursor) in server.stderr


# --- item 18: parts and cursors stay bounded; compaction loses and duplicates nothing ------

def _events_frame(tag: str, n: int) -> pl.DataFrame:
    from ltrr.feedback.events import EVENT_SCHEMA

    return pl.DataFrame([{**e, "request_id": None, "position": None,
                          "timestamp": 1.7e9 + i} for i, e in enumerate(_organic(tag, n))],
                        schema=EVENT_SCHEMA)


_APPENDER = """
import sys, polars as pl
from ltrr.feedback.events import EVENT_SCHEMA, EventLog
log = EventLog(sys.argv[1])
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    log.append_new(pl.DataFrame([{"event_id": f"bg-{i}-{j}", "request_id": None,
        "user_id": "u", "entity_id": "1", "type": "click", "position": None,
        "timestamp": 1.7e9, "query": "q"} for j in range(3)], schema=EVENT_SCHEMA))
"""


def test_compaction_keeps_every_event_once_beside_an_appender(tmp_path):
    from ltrr.feedback.events import EventLog
    from ltrr.parquet_log import MAX_PARTS

    log = EventLog(tmp_path / "events")
    for i in range(MAX_PARTS + 40):
        log.append_new(_events_frame(f"p{i}", 5))
    before = log.read()["event_id"].to_list()
    # another process appends meanwhile, under the same append lock
    appender = subprocess.Popen([sys.executable, "-c", _APPENDER, str(log.directory), "60"],
                                stdout=subprocess.PIPE, text=True)
    assert appender.stdout.readline().strip() == "ready"
    done = log.compact()
    assert appender.wait(120) == 0
    assert done is not None and done["parts_after"] < done["parts_before"]
    after = log.read()["event_id"].to_list()
    assert len(after) == len(set(after))                            # nothing twice
    assert set(after) == set(before) | {f"bg-{i}-{j}" for i in range(60) for j in range(3)}
    assert [e for e in after if not e.startswith("bg-")] == before   # order kept
    assert log.compact() is None or len(log.parts()) <= MAX_PARTS


def test_cursor_keeps_its_meaning_across_compaction(tmp_path):
    from ltrr.feedback.cursor import Cursor
    from ltrr.feedback.events import EventLog
    from ltrr.feedback.ingest import pending_pieces
    from ltrr.parquet_log import MAX_PARTS

    log = EventLog(tmp_path / "events")
    for i in range(MAX_PARTS + 20):
        log.append_new(_events_frame(f"p{i}", 4))
    names = [p.name for p in log.pieces()]
    learned = Cursor().advanced(names[:50], names)
    assert learned.to_json() == {"through": names[49], "parts": []}
    unlearned = log.read(log.parts()[50:])["event_id"].to_list()
    log.compact()
    assert len(log.parts()) < MAX_PARTS
    pending = pending_pieces(log, learned)
    assert [p.name for p in pending] == names[50:]
    assert log.read_pieces(pending)["event_id"].to_list() == unlearned


def test_a_crash_between_merge_and_removal_leaves_each_row_once(tmp_path, monkeypatch):
    from ltrr.feedback.events import EventLog
    from ltrr.parquet_log import MAX_PARTS, ParquetLog

    log = EventLog(tmp_path / "events")
    for i in range(MAX_PARTS + 5):
        log.append_new(_events_frame(f"p{i}", 3))
    before = log.read()["event_id"].to_list()

    def crash(self, parts):
        if parts:
            raise KeyboardInterrupt("killed after the merged part's rename")

    monkeypatch.setattr(ParquetLog, "_remove", crash)
    try:
        log.compact()
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert len(log.files()) > len(log.parts())          # old parts still on disk ...
    assert log.read()["event_id"].to_list() == before    # ... but each row is read once
    assert pl.scan_parquet(log.parts()).collect()["event_id"].to_list() == before
    EventLog(log.directory).compact()                  # the next compaction tidies up
    assert log.files() == log.parts()
    assert log.read()["event_id"].to_list() == before


def test_a_session_leaves_few_parts_and_a_small_cursor(serve_spec):
    from ltrr.compiler import load_plan
    from ltrr.feedback.ingest import ingest
    from ltrr.parquet_log import MAX_PARTS
    from ltrr.runtime.workspace import Workspace

    plan = load_plan(serve_spec)
    batches = MAX_PARTS * 2
    ws = Workspace(plan)
    try:
        for i in range(batches):
            ingest(plan, _events_frame(f"s{i}", 3), workspace=ws)
    finally:
        ws.close()
    state = serve_spec.parent / "state"
    parts = list((state / "events").glob("part-*.parquet"))
    assert len(parts) <= MAX_PARTS + 1, len(parts)
    cursor = state / "memory.learned" / "cursor.json"
    assert cursor.stat().st_size < 300, cursor.read_text()
    assert _memory_events(serve_spec) == 3 * batches
    ids = pl.read_parquet(parts)["event_id"]
    assert ids.len() == ids.n_unique() == 3 * batches


def test_memory_keys_are_capped_and_long_queries_still_match(tmp_path):
    from test_memory import events, open_arm, write_spec

    from ltrr.runtime.batch import index_plan
    from ltrr.compiler import load_plan
    from ltrr_plugins.arms.memory import MAX_KEY_CHARS

    spec = write_spec(tmp_path)
    index_plan(load_plan(spec))
    ws, arm = open_arm(spec)
    try:
        long = "nick cave " * 2000                       # 20,000 characters
        arm.learn(events([(long, "10", 1.0, 1.7e9)] * 3))
        keys = pl.read_parquet(arm.ctx.learned_dir / "memory.parquet")["key"]
        assert keys.str.len_chars().max() <= MAX_KEY_CHARS
        assert [e for e, _, _ in arm.scores(long)[0]][:1] == ["10"]   # same cap on lookup
    finally:
        ws.close()


def test_decision_log_compaction_keeps_every_decision_findable(tmp_path):
    from ltrr.feedback.ingest import decisions_for
    from ltrr.parquet_log import MAX_PARTS
    from ltrr.runtime.decision_log import SCHEMA, DecisionLog

    log = DecisionLog(tmp_path / "decisions")
    for i in range(MAX_PARTS + 10):
        log.append_frame(pl.DataFrame({"request_id": [f"r{i}-{j}" for j in range(3)],
                                       "query": [f"q{i}"] * 3}).with_columns(
            pl.lit(None).cast(t).alias(c) for c, t in SCHEMA.items()
            if c not in ("request_id", "query")))
    before = log.read()
    assert log.compact()["parts_after"] < MAX_PARTS
    assert log.read().equals(before)
    found = decisions_for(None, ["r0-1", f"r{MAX_PARTS + 9}-2"], log)
    assert sorted(found["query"].to_list()) == ["q0", f"q{MAX_PARTS + 9}"]


def test_a_server_compacts_its_logs_while_feedback_goes_on(serve_spec, start_server):
    from ltrr.parquet_log import MAX_PARTS

    server = start_server(serve_spec)
    n = MAX_PARTS + 16
    for i in range(n):                       # one request at a time: one part each
        _post(server.url, _organic(f"c{i}", 2))
    _wait_memory(serve_spec, 2 * n, server)
    from ltrr.feedback.events import EventLog

    log = EventLog(serve_spec.parent / "state" / "events")
    deadline = time.monotonic() + 120
    while len(log.files()) > MAX_PARTS or log.files() != log.parts():
        assert time.monotonic() < deadline, "the server never compacted its event log"
        ids = log.read()["event_id"]                    # exact at any moment
        assert ids.len() == ids.n_unique() == 2 * n
        time.sleep(0.2)
    ids = pl.read_parquet(log.files())["event_id"]      # and for a glob once it is done
    assert ids.len() == ids.n_unique() == 2 * n
    # parts logged while a run learned are crossed off by the next run: poll, do not race it
    deadline = time.monotonic() + 120
    while (health := httpx.get(server.url + "/health", timeout=30).json())["pending_events"]:
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert health["status"] == "ok", health
    assert (serve_spec.parent / "state" / "memory.learned" / "cursor.json").stat().st_size < 300


def test_cursor_reads_the_old_form_and_stays_short_with_out_of_order_learning(tmp_path):
    from ltrr.feedback.cursor import Cursor, read_cursor, write_cursor

    names = [f"part-{i:020d}-1-aaaaaaaa.parquet" for i in range(1, 2001)]
    path = tmp_path / "cursor.json"
    path.write_text(json.dumps({"parts": names[:1500]}))          # the old form: 110 KB
    old = read_cursor(path, lambda: names)
    assert all(old.learned(n) for n in names[:1500]) and not old.learned(names[1500])
    # a server with several workers learns settled parts first: a few out of order
    new = old.advanced(names[1502:1505], names)
    assert new.to_json() == {"through": names[1499], "parts": names[1502:1505]}
    new = new.advanced(names[1500:1502], names)
    assert new.to_json() == {"through": names[1504], "parts": []}
    write_cursor(path, new)
    assert path.stat().st_size < 200 and read_cursor(path, lambda: names) == new
    assert Cursor.from_json(json.loads(path.read_text())) == new
