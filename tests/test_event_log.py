"""The event log and learned state under several writers, damage and growth.

One learner per state folder (``ltrr feedback`` beside a running ``ltrr serve`` hands
its events to the server instead of overwriting what the server learned); damaged
event-log parts and cursors are named and quarantined, not a traceback; parts and
cursors stay bounded.
"""

from __future__ import annotations

import json
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
    path = spec.parent / "state" / "memory.learned" / "memory.parquet"
    if not path.exists():
        return 0
    return int(pl.read_parquet(path)["events"].sum())


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
