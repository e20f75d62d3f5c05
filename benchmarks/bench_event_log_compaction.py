"""Event-log compaction under many small /feedback appends: parts, append, read, cursor.

Every /feedback group commit writes one immutable Parquet part to the event log, so a
server taking feedback a few events at a time makes many tiny parts. The learning
process compacts them after each catch-up (``ltrr.feedback.ingest.compact_logs`` →
``ParquetLog.compact``): once there are more than ``MAX_PARTS`` (64) live parts, runs of
consecutive parts of at most ``SMALL_BYTES`` (8 MiB) are merged into parts of at most
about ``MERGED_BYTES`` (64 MiB). Compaction is not part of the append itself.

Two event logs in temporary folders get the same ``--appends`` (2,000) batches of 1-5
events (validated by ``events_from_rows`` as /feedback does, not timed), appended
alternately (who goes first alternates), each cycle being:

* append: the /feedback writer's own code, ``FeedbackIntake._append`` (append lock, new
  parts' ids read, one part written with fsync), on a stub of the served pipeline;
* catch-up, every ``--learn-every`` appends: what ``catch_up`` does around a learner's
  ``learn`` -- ``pieces()``, the cursor read (``cursor_of``), the pending pieces read
  (``read_pieces``), the advanced cursor written (``cursor.json``);
* then ``EventLog.compact()`` with the shipped defaults ("with compaction"), or
  ``compact(max_parts=sys.maxsize)`` (the baseline "without": the same call, which then
  never merges).

Reported: live parts and part files at the end (target: at most ``MAX_PARTS``: every
part here is small, so each compaction leaves at most that many), medians over the last
``--last`` (200) cycles of the append and of the catch-up + compaction, the compaction
runs, the cursor file's size, a full read (``pl.scan_parquet(parts).collect()``,
``--reads`` times interleaved; target: with / without < 1), ``EventLog.append_new``
(``ltrr feedback``'s deduplicating append, which scans every part's ids) on the final
logs, and that each log reads back exactly the events appended (target 0 differences).

    .venv/bin/python benchmarks/bench_event_log_compaction.py [--appends 2000]
        [--last 200] [--learn-every 1] [--reads 9] [--out FILE]
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path
from time import perf_counter
from types import SimpleNamespace

import _common as c

TYPES = ("impression", "click", "play", "skip", "favorite")
BASE_TS = 1_700_000_000.0


class _Learner:
    """What ``FeedbackIntake._append`` tells the background learner: ignored here."""

    def logged(self, part: str, events: int) -> None:
        pass


class Variant:
    """One state folder: its event log, the /feedback writer, a learner's cursor."""

    def __init__(self, name: str, root: Path, compact: bool):
        from ltrr.feedback.ingest import CURSOR, event_log
        from ltrr.serve.intake import FeedbackIntake

        self.name, self.compact_on = name, compact
        state = root / name
        state.mkdir()
        from ltrr.spec import EVENTS_DIR

        self.served = SimpleNamespace(plan=SimpleNamespace(spec=SimpleNamespace(
            state_dir=state, events_dir=state / EVENTS_DIR)))
        self.elog = event_log(self.served.plan)
        self.intake = FeedbackIntake(SimpleNamespace(max_events=0), None, None, None,
                                     _Learner())
        self.cursor_path = state / "learner.learned" / CURSOR
        self.append_ms: list[float] = []
        self.cycle_ms: list[float] = []     # catch-up + compaction, per learning
        self.compact_runs: list[tuple[float, dict]] = []
        self.learned_events = 0

    def append(self, frame) -> None:
        t = perf_counter()
        self.intake._append(self.served, [(0, frame)])
        self.append_ms.append((perf_counter() - t) * 1000.0)

    def learn_and_compact(self) -> None:
        from ltrr.feedback.cursor import write_cursor
        from ltrr.feedback.ingest import cursor_of, pending_pieces

        elog = self.elog
        t = perf_counter()
        pieces = elog.pieces()
        cursor = cursor_of(self.cursor_path.parent, elog)
        pending = pending_pieces(elog, cursor, pieces=pieces)
        if pending:
            self.learned_events += elog.read_pieces(pending).height
            write_cursor(self.cursor_path, cursor.advanced({p.name for p in pending},
                                                           [p.name for p in pieces]))
        tc = perf_counter()
        out = elog.compact() if self.compact_on else elog.compact(max_parts=sys.maxsize)
        end = perf_counter()
        if out:
            self.compact_runs.append(((end - tc) * 1000.0, out))
        self.cycle_ms.append((end - t) * 1000.0)


def batches(n: int, lo: int, hi: int, seed: int):
    """``n`` /feedback request bodies' rows: 1 decision each, ``lo``-``hi`` events."""
    rng = random.Random(seed)
    for i in range(n):
        user = f"u{rng.randrange(500)}"
        yield [{"request_id": f"req-{i:06d}", "user_id": user,
                "entity_id": f"e{rng.randrange(20_000)}", "type": rng.choice(TYPES),
                "position": pos + 1, "timestamp": BASE_TS + i + pos / 100}
               for pos in range(rng.randint(lo, hi))]


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--appends", type=int, default=2000, help="small appends per log")
    p.add_argument("--min-events", type=int, default=1, help="fewest events per append")
    p.add_argument("--max-events", type=int, default=5, help="most events per append")
    p.add_argument("--learn-every", type=int, default=1,
                   help="appends between two catch-up + compaction cycles")
    p.add_argument("--last", type=int, default=200,
                   help="appends (and catch-up cycles) the medians are over")
    p.add_argument("--reads", type=int, default=9, help="full reads per log")
    p.add_argument("--append-new", type=int, default=20,
                   help="EventLog.append_new calls per log on the final logs")
    args = p.parse_args()
    started = perf_counter()

    import polars as pl

    from ltrr import parquet_log
    from ltrr.errors import Location
    from ltrr.feedback.events import events_from_rows

    def where(i: int) -> Location:
        return Location(f"request field events[{i}]")

    with tempfile.TemporaryDirectory(prefix="ltrr-bench-compaction-") as tmp:
        root = Path(tmp)
        on, off = Variant("with", root, True), Variant("without", root, False)
        variants = (on, off)
        appended: list[str] = []
        c.log(f"{args.appends} appends of {args.min_events}-{args.max_events} events into "
              f"2 event logs (catch-up + compact every {args.learn_every}) in {root}")
        for i, rows in enumerate(batches(args.appends, args.min_events, args.max_events,
                                         args.seed)):
            frame = events_from_rows(rows, where)
            appended += frame["event_id"].to_list()
            learn = (i + 1) % args.learn_every == 0 or i + 1 == args.appends
            for v in variants if i % 2 == 0 else variants[::-1]:
                v.append(frame)
                if learn:
                    v.learn_and_compact()
            if (i + 1) % 250 == 0:
                c.log(f"  {i + 1} appends: live parts {len(on.elog.parts())} with, "
                      f"{len(off.elog.parts())} without; last append "
                      f"{on.append_ms[-1]:.2f} / {off.append_ms[-1]:.2f} ms")

        state = {}
        for v in variants:
            parts = v.elog.parts()
            state[v.name] = {
                "live_parts": len(parts),
                "part_files": len(list(v.elog.directory.glob("part-*.parquet"))),
                "compacted_parts": sum(parquet_log.is_compacted(x) for x in parts),
                "bytes": sum(x.stat().st_size for x in parts),
                "cursor_bytes": v.cursor_path.stat().st_size,
                "cursor": v.cursor_path.read_text(),
                "learned_events": v.learned_events,
                "compaction_runs": len(v.compact_runs),
            }

        c.log(f"full reads: {args.reads} per log, interleaved")
        read_ms: dict[str, list[float]] = {v.name: [] for v in variants}
        log_read_ms: dict[str, list[float]] = {v.name: [] for v in variants}
        check: dict[str, int] = {}
        for r in range(args.reads):
            for v in variants if r % 2 == 0 else variants[::-1]:
                parts = v.elog.parts()
                t = perf_counter()
                frame = pl.scan_parquet(parts).collect()
                read_ms[v.name].append((perf_counter() - t) * 1000.0)
                if r == 0:
                    got = frame["event_id"].to_list()
                    check[v.name] = (sum(a != b for a, b in zip(got, appended))
                                     + abs(len(got) - len(appended)))
                if r < 3:
                    t = perf_counter()
                    v.elog.read()
                    log_read_ms[v.name].append((perf_counter() - t) * 1000.0)

        c.log(f"EventLog.append_new on the final logs: {args.append_new} per log")
        new_ms: dict[str, list[float]] = {v.name: [] for v in variants}
        for i, rows in enumerate(batches(args.append_new, 3, 3, args.seed + 1)):
            for row in rows:
                row["request_id"] = f"late-{row['request_id']}"
            frame = events_from_rows(rows, where)
            for v in variants if i % 2 == 0 else variants[::-1]:
                t = perf_counter()
                v.elog.append_new(frame)
                new_ms[v.name].append((perf_counter() - t) * 1000.0)

    last = args.last
    a_on, a_off = c.median(on.append_ms[-last:]), c.median(off.append_ms[-last:])
    cy_on, cy_off = c.median(on.cycle_ms[-last:]), c.median(off.cycle_ms[-last:])
    rd_on, rd_off = c.median(read_ms["with"]), c.median(read_ms["without"])
    an_on, an_off = c.median(new_ms["with"]), c.median(new_ms["without"])
    s_on, s_off = state["with"], state["without"]
    runs = [ms for ms, _ in on.compact_runs]
    bound = parquet_log.MAX_PARTS
    metrics = [
        c.metric(f"live event-log parts after {args.appends} appends", s_on["live_parts"],
                 "parts", target=f"<= {bound} (MAX_PARTS)",
                 passed=s_on["live_parts"] <= bound, baseline=s_off["live_parts"],
                 baseline_name="without compaction",
                 note=f"part files on disk {s_on['part_files']} vs {s_off['part_files']}; "
                      f"{s_on['compacted_parts']} compacted; compaction is not in the append:"
                      f" the baseline calls compact(max_parts=sys.maxsize) instead",
                 digits=0),
        c.metric(f"/feedback append, last {last} (median)", a_on, "ms", baseline=a_off,
                 baseline_name="without compaction",
                 note=f"FeedbackIntake._append; p95 {c.percentile(on.append_ms[-last:], 95):.2f}"
                      f" vs {c.percentile(off.append_ms[-last:], 95):.2f} ms"),
        c.metric(f"catch-up + compact per cycle, last {len(on.cycle_ms[-last:])} (median)",
                 cy_on, "ms", baseline=cy_off, baseline_name="without compaction",
                 note=f"p95 {c.percentile(on.cycle_ms[-last:], 95):.2f} vs "
                      f"{c.percentile(off.cycle_ms[-last:], 95):.2f} ms, max "
                      f"{max(on.cycle_ms[-last:]):.1f} vs {max(off.cycle_ms[-last:]):.1f} ms"),
        c.metric("compaction run that merged (median)", c.median(runs) if runs else None, "ms",
                 note=f"{len(runs)} runs in {args.appends} appends; max "
                      f"{max(runs) if runs else 0:.1f} ms"),
        c.metric("full read, pl.scan_parquet(all parts) (median)", rd_on, "ms",
                 target="ratio < 1", passed=rd_on < rd_off, baseline=rd_off,
                 baseline_name="without compaction",
                 note=f"{len(appended):,} events; EventLog.read() "
                      f"{c.median(log_read_ms['with']):.1f} vs "
                      f"{c.median(log_read_ms['without']):.1f} ms"),
        c.metric("EventLog.append_new of 3 events on the final log (median)", an_on, "ms",
                 baseline=an_off, baseline_name="without compaction",
                 note="ltrr feedback's append: scans the ids of every part"),
        c.metric("learner cursor.json size", s_on["cursor_bytes"], "bytes",
                 baseline=s_off["cursor_bytes"], baseline_name="without compaction",
                 note="cursors name original appends, which compaction keeps", digits=0),
        c.metric("events read back differing from appended (both logs)",
                 check["with"] + check["without"], "events", target="= 0",
                 passed=check["with"] + check["without"] == 0
                 and s_on["learned_events"] == s_off["learned_events"] == len(appended),
                 note=f"with {check['with']}, without {check['without']}; learned "
                      f"{s_on['learned_events']} / {s_off['learned_events']} of "
                      f"{len(appended)}", digits=0),
    ]
    details = {
        "appends": args.appends, "events": len(appended),
        "events_per_append": [args.min_events, args.max_events],
        "learn_every": args.learn_every, "last": last, "seed": args.seed,
        "constants": {"MAX_PARTS": parquet_log.MAX_PARTS,
                      "SMALL_BYTES": parquet_log.SMALL_BYTES,
                      "MERGED_BYTES": parquet_log.MERGED_BYTES},
        "state": state,
        "append_ms": {v.name: c.summary(v.append_ms[-last:]) for v in variants},
        "append_ms_all": {v.name: c.summary(v.append_ms) for v in variants},
        "cycle_ms": {v.name: c.summary(v.cycle_ms[-last:]) for v in variants},
        "compaction_runs_ms": c.summary(runs) if runs else None,
        "compaction_runs_first": [out for _, out in on.compact_runs[:3]],
        "full_read_ms": {k: c.summary(x) for k, x in read_ms.items()},
        "eventlog_read_ms": {k: c.summary(x) for k, x in log_read_ms.items()},
        "append_new_ms": {k: c.summary(x) for k, x in new_ms.items()},
    }
    c.emit(c.result("event_log_compaction",
                    f"Event log: {args.appends} small appends, compaction vs none",
                    metrics, details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
