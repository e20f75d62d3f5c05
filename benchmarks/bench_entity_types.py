"""Artists and stations in one funnel: a type-aware policy against the best fixed allocation
and against a type-blind spec, on listeners who want stations as well as artists.

The catalog is ``examples/data/lastfm/music_mixed.parquet`` (17,632 artists and 321 tag
stations). Simulated Last.fm listeners (``lastfm`` user model, held-out half of users and
wordings, silent misses) look for an artist (exact, misspelled, partial, tag, like,
vague queries) or for a station (``station``: "<tag> radio", "play <tag>", a bare tag…);
``--station-share`` of the sessions want a station.

* aware — ``pipelines/music-mixed.yaml``: arms declare their types (a BM25 per type, the
  names and graph arms across types), vw allocates over them with the slots' entity types
  among its features;
* blind — the same spec with every ``types:`` removed and the stations' BM25 arm dropped:
  one BM25 and one dense index over artists and stations alike, as a spec written
  without types would be. (The catalog still declares its types, so results are labelled
  and the simulated listeners can want stations; no node of the blind spec reads them.)

Both run the same sessions (same seed, same user model on the same catalog: checked);
reported with paired SEs over sessions, per seed and as the mean of seeds: aware vw −
its best fixed allocation (chosen in hindsight), aware vw − blind vw, and each one's
recall by the entity type wanted. No target: honest whatever it shows.

    .venv/bin/python benchmarks/bench_entity_types.py [--sessions 10000] [--seeds 2]
        [--station-share 0.25] [--split held-out]
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

SPEC = c.ROOT / "pipelines" / "music-mixed.yaml"
ARTIST_MIX = {"exact": 0.30, "misspelled": 0.15, "partial": 0.15, "tag": 0.10,
              "like": 0.15, "vague": 0.15}


def ltrr(*args: str) -> str:
    done = subprocess.run([str(c.venv_bin("ltrr")), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ltrr {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def blind_spec() -> Path:
    """``music-mixed.yaml`` without types (written beside it: the same relative paths)."""
    import yaml

    data = yaml.safe_load(SPEC.read_text())
    data["name"] = "music-mixed-blind"
    data["arms"] = [a for a in data["arms"] if a["id"] != "stations"]
    for arm in data["arms"]:
        arm.pop("types", None)
    path = SPEC.with_name(".bench-entity-types-blind.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(spec: Path, mix: dict, seed: int, sessions: int, split: str, out: Path) -> dict:
    import yaml

    step = yaml.safe_load(spec.read_text())["policy"]["with"]["step"]
    ltrr("simulate", str(spec), "--with", "mix=" + json.dumps(mix), "--with", f"split={split}",
         "--sessions", str(sessions), "--seed", str(seed), "--step", str(step),
         "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    return next(iter(summary["policies"].values()))


def paired(a, b) -> tuple[float, float]:
    """Mean and SE of a − b (per-session float series)."""
    d = a - b
    return float(d.mean()), float(d.std()) / math.sqrt(len(d))


def main() -> None:
    import polars as pl

    ap = c.parser(__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--station-share", type=float, default=0.25)
    ap.add_argument("--split", default="held-out", choices=["held-out", "tuning", "all"])
    args = ap.parse_args()
    if not 0 < args.station_share < 1:
        ap.error("--station-share must be between 0 and 1")
    started = perf_counter()
    mix = {t: round(w * (1 - args.station_share), 4) for t, w in ARTIST_MIX.items()}
    mix["station"] = args.station_share
    blind = blind_spec()
    metrics, rows = [], []
    try:
        for spec in (SPEC, blind):
            c.log(f"indexing {spec.name} (reused if built)")
            ltrr("index", str(spec))
        with tempfile.TemporaryDirectory(prefix="bench-entity-types-") as tmp:
            for seed in range(args.seeds):
                c.log(f"seed {seed}: {args.sessions} sessions, {args.station_share:.0%} want a "
                      f"station, {args.split} half; aware, then blind")
                t = perf_counter()
                aware = run(SPEC, mix, seed, args.sessions, args.split, Path(tmp) / f"a{seed}")
                unaware = run(blind, mix, seed, args.sessions, args.split,
                              Path(tmp) / f"b{seed}")
                sa = pl.read_parquet(Path(tmp) / f"a{seed}" / "sessions.parquet")
                sb = pl.read_parquet(Path(tmp) / f"b{seed}" / "sessions.parquet")
                if sa["target"].to_list() != sb["target"].to_list() or \
                        sa["query"].to_list() != sb["query"].to_list():
                    raise SystemExit("the two specs did not get the same sessions")
                ra, rb = sa["reward"].cast(pl.Float64), sb["reward"].cast(pl.Float64)
                row = {"seed": seed, "seconds": round(perf_counter() - t, 1),
                       "aware": {"recall": aware["recall"],
                                 "by_entity_type": aware["recall_by_entity_type"],
                                 "by_query_type": aware["recall_by_type"],
                                 "recall_by_quarter": aware["recall_by_quarter"],
                                 "best_fixed": aware["best_fixed"]},
                       "blind": {"recall": unaware["recall"],
                                 "by_entity_type": unaware["recall_by_entity_type"],
                                 "by_query_type": unaware["recall_by_type"],
                                 "recall_by_quarter": unaware["recall_by_quarter"],
                                 "best_fixed": unaware["best_fixed"]},
                       "aware_minus_best_fixed": paired(ra, sa["best_fixed"].cast(pl.Float64)),
                       "aware_minus_blind": paired(ra, rb),
                       "blind_minus_blind_best_fixed": paired(
                           rb, sb["best_fixed"].cast(pl.Float64))}
                rows.append(row)
        for key, label in (("aware_minus_best_fixed", "type-aware vw − its best fixed allocation"),
                           ("aware_minus_blind", "type-aware vw − type-blind vw"),
                           ("blind_minus_blind_best_fixed",
                            "type-blind vw − its best fixed allocation")):
            for r in rows:
                mean, se = r[key]
                metrics.append(c.metric(f"seed {r['seed']}: {label}", mean,
                                        note=f"± {se:.4f} paired SE over sessions"))
            mean = sum(r[key][0] for r in rows) / len(rows)
            se = math.sqrt(sum(r[key][1] ** 2 for r in rows)) / len(rows)
            metrics.append(c.metric(f"{label}, mean of seeds", mean, note=(
                f"± {se:.4f} (seeds' paired SEs combined); {args.sessions} sessions × "
                f"{len(rows)} seeds, {args.station_share:.0%} want a station, {args.split}")))
        for side in ("aware", "blind"):
            for kind in rows[0][side]["by_entity_type"]:
                vals = [r[side]["by_entity_type"][kind] for r in rows]
                best = [r[side]["best_fixed"]["recall_by_entity_type"][kind] for r in rows]
                metrics.append(c.metric(
                    f"{side}: recall of the wanted {kind}, mean of seeds", sum(vals) / len(vals),
                    baseline=sum(best) / len(best),
                    baseline_name=f"{side} spec's best fixed allocation"))
    finally:
        blind.unlink(missing_ok=True)
    c.emit(c.result("entity_types", "artists and stations: type-aware vs best fixed vs "
                    "type-blind", metrics, {"rows": rows, "mix": mix, "split": args.split},
                    started=started), args.out)


if __name__ == "__main__":
    main()
