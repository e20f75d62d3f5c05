"""Two Lucene BM25 arms searched at once: what the concurrency fix costs (issue 10.1).

pyjnius binds a Java instance method by storing the object on a descriptor shared by
every proxy of the class, so two arms searching at once could run on each other's
searcher. ``ltrr_plugins.arms.lucene`` holds one process-wide lock around its calls into
Java, except the search itself, which each searcher runs through an IndexSearcher proxy
class of its own (so searches of several arms still overlap). This measures it.

Set-up (not timed): a synthetic index of ``--docs`` (100,000) short documents built with
the project's ``lucene.build_index`` in a temporary folder (deterministic for
``--seed``): fields ``name`` (1-4 words) and ``tags`` (3-12 words) drawn from a
Zipf-weighted vocabulary of ``--vocab`` made-up words. Two arms over it, as in
``tests/test_lucene_concurrency.py``: arm A ``search(q, k, {name: 3, tags: 1})`` with
BM25 k1=0.9 b=0.4; arm B ``search(q, k)`` on ``contents`` with k1=1.2 b=0.75, each on
its own ``FieldedSearcher``. Queries: 1-3 words of the same vocabulary; k = 100.

Timed, ``--rounds`` rounds of ``--queries`` queries after ``--warmup`` warm-up queries;
the variants are interleaved round by round (their order rotates), wall time per query
(both arms):

* sequential (the baseline): arm A then arm B on one thread;
* concurrent: both arms submitted to a 2-thread pool and awaited, as the pipeline fans a
  wave out to its arms -- the shipped code;
* locked (for reference): the same 2 threads, each search holding ``lucene.jvm._lock``
  whole: the earlier fix (a6e7e8d), where the search also ran under the lock.

Every result list of every round is compared with a sequential reference computed
first: the count of lists that differ must be 0 (target). Speed figures are medians of
the per-query times pooled over rounds; per-round medians are in the details.

    .venv/bin/python benchmarks/bench_lucene_concurrency.py [--docs 100000]
        [--queries 600] [--rounds 5] [--out FILE]
"""

from __future__ import annotations

import itertools
import random
import sys
import tempfile
from bisect import bisect
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter

import _common as c

K = 100
FIELDS_A = {"name": 3.0, "tags": 1.0}


class Zipf:
    """Deterministic draws of made-up words with Zipf weights (1 / rank)."""

    def __init__(self, n: int, rng: random.Random):
        letters = "bcdfghjklmnprstvz"
        vowels = "aeiou"
        words: set[str] = set()
        while len(words) < n:   # pronounceable, distinct, no digits: analysed as one term
            syllables = rng.randint(2, 4)
            words.add("".join(rng.choice(letters) + rng.choice(vowels)
                              for _ in range(syllables)) + rng.choice("bdgkmnprt"))
        self.words = sorted(words)
        rng.shuffle(self.words)
        self.cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(n)))
        self.rng = rng

    def draw(self, k: int) -> str:
        total, rnd, cum, words = self.cum[-1], self.rng.random, self.cum, self.words
        return " ".join(words[bisect(cum, rnd() * total)] for _ in range(k))


def build(index_dir: Path, n_docs: int, vocab: Zipf) -> dict:
    from ltrr_plugins.arms import lucene

    rng = vocab.rng

    def docs():
        for i in range(n_docs):
            yield {"id": f"d{i:07d}", "name": vocab.draw(rng.randint(1, 4)),
                   "tags": vocab.draw(rng.randint(3, 12))}

    def progress(n: int) -> None:
        if n % 20000 == 0 or n == n_docs:
            c.log(f"  indexed {n:,} / {n_docs:,}")

    t = perf_counter()
    indexed = lucene.build_index(docs(), index_dir, ["name", "tags"], progress=progress,
                                 batch_size=5000)
    return {"docs": indexed, "seconds": round(perf_counter() - t, 2)}


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=100_000, help="documents in the index")
    p.add_argument("--vocab", type=int, default=5000, help="distinct words")
    p.add_argument("--queries", type=int, default=600, help="queries per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds per variant")
    p.add_argument("--warmup", type=int, default=200, help="warm-up queries per variant")
    p.add_argument("--no-locked", action="store_true",
                   help="skip the reference variant with the search under the lock")
    args = p.parse_args()
    started = perf_counter()

    from ltrr_plugins.arms import lucene

    rng = random.Random(args.seed)
    vocab = Zipf(args.vocab, rng)
    with tempfile.TemporaryDirectory(prefix="ltrr-bench-lucene-") as tmp:
        index_dir = Path(tmp) / "index"
        c.log(f"building a synthetic index of {args.docs:,} documents in {index_dir}")
        t = perf_counter()
        lucene.start_jvm()
        jvm_s = perf_counter() - t
        built = build(index_dir, args.docs, vocab)
        c.log(f"  {built['docs']:,} documents in {built['seconds']:.1f} s")

        qrng = random.Random(args.seed + 1)
        vocab.rng = qrng
        texts = [vocab.draw(qrng.randint(1, 3)) for _ in range(args.warmup + args.queries)]
        warm, queries = texts[:args.warmup], texts[args.warmup:]

        a = lucene.FieldedSearcher(index_dir, k1=0.9, b=0.4)
        b = lucene.FieldedSearcher(index_dir, k1=1.2, b=0.75)
        pool = ThreadPoolExecutor(2, thread_name_prefix="ltrr-arm")
        try:
            arms = [lambda q: a.search(q, K, FIELDS_A), lambda q: b.search(q, K)]

            def locked(call):
                def run(q):
                    with lucene.jvm._lock:
                        return call(q)
                return run

            locked_arms = [locked(f) for f in arms]

            def sequential(q):
                return [f(q) for f in arms]

            def concurrent(q, calls=arms):
                futures = [pool.submit(f, q) for f in calls]
                return [f.result() for f in futures]

            variants = {"sequential": sequential, "concurrent": concurrent}
            if not args.no_locked:
                variants["locked"] = lambda q: concurrent(q, locked_arms)

            c.log(f"warm-up: {len(warm)} queries per variant")
            for run in variants.values():
                for q in warm:
                    run(q)

            c.log(f"sequential reference: {len(queries)} queries")
            reference = [sequential(q) for q in queries]
            empty_ref = sum(not r for lists in reference for r in lists)

            times: dict[str, list[float]] = {v: [] for v in variants}
            rounds: dict[str, list[float]] = {v: [] for v in variants}
            diffs: dict[str, int] = dict.fromkeys(variants, 0)
            empty: dict[str, int] = dict.fromkeys(variants, 0)
            names = list(variants)
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    run = variants[name]
                    per = []
                    for q, want in zip(queries, reference):
                        t = perf_counter()
                        got = run(q)
                        per.append((perf_counter() - t) * 1000.0)
                        for g, w in zip(got, want):
                            if g != w:
                                diffs[name] += 1
                                empty[name] += not g
                    times[name] += per
                    rounds[name].append(c.median(per))
                c.log(f"round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{n} {rounds[n][-1]:.3f} ms" for n in names)
                    + f"; differing lists so far: {diffs}")

            c.log("each arm alone (sequential, timed call by call): one pass")
            alone = [[], []]
            for q in queries:
                for i, f in enumerate(arms):
                    t = perf_counter()
                    f(q)
                    alone[i].append((perf_counter() - t) * 1000.0)
        finally:
            pool.shutdown(wait=True)
            a.close()
            b.close()

    seq, conc = c.median(times["sequential"]), c.median(times["concurrent"])
    lists = args.rounds * len(queries) * len(arms)
    slower_arm = max(c.median(alone[0]), c.median(alone[1]))
    metrics = [
        c.metric("2 arms concurrent, 2 threads (median ms/query)", conc, "ms",
                 baseline=seq, baseline_name="same 2 arms sequential, 1 thread",
                 note=f"p90 {c.percentile(times['concurrent'], 90):.3f} ms vs "
                      f"{c.percentile(times['sequential'], 90):.3f} ms, mean "
                      f"{c.summary(times['concurrent'])['mean']:.3f} ms vs "
                      f"{c.summary(times['sequential'])['mean']:.3f} ms; slower arm alone "
                      f"{slower_arm:.3f} ms (the 2-core floor); {args.docs:,} docs, k={K}"),
        c.metric("2 arms sequential, 1 thread (median ms/query)", seq, "ms",
                 note=f"arm A alone {c.median(alone[0]):.3f} ms, arm B alone "
                      f"{c.median(alone[1]):.3f} ms"),
    ]
    if "locked" in variants:
        lk = c.median(times["locked"])
        metrics.append(c.metric(
            "2 arms concurrent, search under the lock (median ms/query)", lk, "ms",
            baseline=seq, baseline_name="same 2 arms sequential, 1 thread",
            note=f"the earlier fix (a6e7e8d), for reference; shipped concurrent / this = "
                 f"{conc / lk:.2f}"))
    metrics.append(c.metric(
        "concurrent result lists differing from sequential", diffs["concurrent"], "lists",
        target="= 0", passed=diffs["concurrent"] == 0,
        note=f"of {lists:,} ({args.rounds} rounds x {len(queries)} queries x 2 arms); "
             f"{empty['concurrent']} empty; sequential rounds: {diffs['sequential']}"
             + (f", locked: {diffs['locked']}" if "locked" in diffs else ""),
        digits=0))
    details = {
        "docs": built, "jvm_start_s": round(jvm_s, 2), "vocab": args.vocab, "k": K,
        "queries": len(queries), "rounds": args.rounds, "warmup": len(warm),
        "seed": args.seed, "pool_threads": 2,
        "arm_a": {"fields": FIELDS_A, "k1": 0.9, "b": 0.4},
        "arm_b": {"fields": "contents", "k1": 1.2, "b": 0.75},
        "ms_per_query": {v: c.summary(t) for v, t in times.items()},
        "round_medians_ms": {v: [round(x, 4) for x in r] for v, r in rounds.items()},
        "arm_alone_ms": {"a": c.summary(alone[0]), "b": c.summary(alone[1])},
        "differing_lists": diffs, "differing_empty": empty,
        "reference_empty_lists": empty_ref,
        "mean_hits_reference": round(sum(len(r) for lists in reference for r in lists)
                                     / (2 * len(reference)), 1),
    }
    c.emit(c.result("lucene_concurrency", f"2 Lucene BM25 arms at once, {args.docs:,} docs",
                    metrics, details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
