"""BEIR SciFact: a per-query arm selector (BM25 | dense | RRF of both) learned from bandit feedback.

The spec, ``pipelines/scifact-selector.yaml``, has the arms, encoder and merger of
``scifact-hybrid.yaml`` (same indexes: ``state_dir: .ltrr/scifact-hybrid``) and a ``vw``
policy with budget 200 and step 100, so its action space is exactly three allocations:
``{lexical: 200}`` (BM25; RRF over one arm keeps its order), ``{dense: 200}`` and
``{lexical: 100, dense: 100}`` (RRF k=10 = scifact-hybrid, nDCG@10 0.7239).

1. Counterfactuals: every query (809 train + 300 test) is run once per action through the
   real pipeline (``Pipeline.run_batch`` with the policy node replaced by a fixed choice);
   each action's nDCG@10 per query comes from ir-measures with the split's qrels.
2. Learning from bandit feedback: for each train query (``--epochs`` shuffled passes) the
   policy computes its pmf, the action is drawn with the framework's seeded per-request
   draw, and only that action's nDCG@10 is revealed. It goes back through the policy's
   normal ``learn(interactions)`` path: one interactions row per decision (as
   ``ltrr.feedback.interactions`` produces them) with ``in_candidates = true`` and the
   event ``weight`` = the nDCG@10, so the reward (max weight × in-candidates) is the nDCG.
   Learning happens in batches of ``--batch`` decisions (choose for the batch, then learn),
   as ``ltrr feedback`` does.
3. Test: the greedy action (argmax of the pmf) per test query; nDCG@10 of the composed run
   with ir-measures, against RRF (0.7239), BM25 alone, dense alone, the best fixed action
   on train, and the per-query oracle (best of the three actions for each test query).

Context features: ``query`` is the framework's query group (length bucket, digits...).
``+probe`` adds, inside the same ``query`` namespace, signals read from the arms' own
result lists (top BM25 score, its margin over the 2nd and 10th, the dense top cosine and
its margins, the overlap of the two arms' top 10s) — numbers a decision can only see if
both arms ran first; see docs/scifact-selector.md for what that means for a deployment.
For the tabular ``epsilon_greedy`` the probe signals are bucketed (tertiles on train).
``+text`` adds the ``text`` group: the query's words, word pairs and character n-grams.

    .venv/bin/python benchmarks/bench_scifact_selector.py [--epochs 5] [--seeds 5] [--out F]
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

DATA = c.SHARED_DATA / "beir-scifact"
SPEC = c.ROOT / "pipelines" / "scifact-selector.yaml"
DOC = c.ROOT / "docs" / "scifact-selector.md"
RRF_REFERENCE = 0.7239
ACTIONS = [("bm25", {"lexical": 200}), ("dense", {"dense": 200}),
           ("rrf", {"lexical": 100, "dense": 100})]
_WORD = re.compile(r"\w+", re.UNICODE)


class FixedChoice:
    """Stands in for the policy node while the counterfactual runs: one fixed action."""

    def __init__(self, allocation: dict[str, int]):
        self.allocation = allocation

    def choose_batch(self, contexts):
        from ltrr.types import Action

        return [Action(allocation=dict(self.allocation), probability=1.0,
                       pmf=[(dict(self.allocation), 1.0)], index=0) for _ in contexts]


def probe_features(text: str, lex: list, dense: list) -> dict[str, float]:
    """Numeric signals of how confident each arm is on this query (from its result list)."""
    def s(lst, i):
        return float(lst[i].score) if len(lst) > i else 0.0

    b1, b2, b10 = s(lex, 0), s(lex, 1), s(lex, 9)
    d1, d2, d10 = s(dense, 0), s(dense, 1), s(dense, 9)
    top_l = {x.entity_id for x in lex[:10]}
    top_d = {x.entity_id for x in dense[:10]}
    return {
        "ntok": len(_WORD.findall(text)) / 10.0,
        "bm25_top": b1 / 30.0,
        "bm25_gap2": (b1 - b2) / b1 if b1 > 0 else 0.0,
        "bm25_gap10": (b1 - b10) / b1 if b1 > 0 else 0.0,
        "dense_top": d1,
        "dense_gap2": (d1 - d2) * 10.0,
        "dense_gap10": (d1 - d10) * 5.0,
        "overlap10": len(top_l & top_d) / 10.0,
        "top1_agree": 1.0 if lex and dense and lex[0].entity_id == dense[0].entity_id else 0.0,
    }


def tertiles(values: list[float]) -> tuple[float, float]:
    xs = sorted(values)
    return xs[len(xs) // 3], xs[2 * len(xs) // 3]


def bucketed(probe: dict[str, float], cuts: dict[str, tuple[float, float]],
             names=("bm25_top", "dense_top", "overlap10")) -> dict[str, str]:
    """Categorical (tertile) versions of a few probe signals, for the tabular baseline."""
    out = {}
    for n in names:
        lo, hi = cuts[n]
        v = probe[n]
        out[f"{n}_b"] = "lo" if v < lo else "mid" if v < hi else "hi"
    return out


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5, help="shuffled passes over train")
    p.add_argument("--seeds", type=int, default=5, help="independent learning runs")
    p.add_argument("--batch", type=int, default=32, help="decisions per learn() call")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite the docs table")
    args = p.parse_args()
    started = perf_counter()
    title = "SciFact: learned per-query arm selector (BM25 | dense | RRF) vs RRF"
    files = ("corpus.jsonl.gz", "queries.jsonl.gz", "qrels/train.tsv.gz", "qrels/test.tsv.gz")
    c.require_data(DATA, files)

    from ltrr.compiler import load_plan
    from ltrr.components import ComponentContext
    from ltrr.evaluation import evaluate_run, read_qrels, run_of
    from ltrr.feedback.interactions import interaction_frame
    from ltrr.runtime.batch import index_plan
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.runtime.queries import read_queries
    from ltrr.types import PolicyContext
    from ltrr_plugins.policies.base import draw, sample
    from ltrr_plugins.policies.epsilon_greedy import EpsilonGreedyPolicy
    from ltrr_plugins.policies.vw import VWPolicy

    plan = load_plan(SPEC)
    t = perf_counter()
    built = {k: v for k, v in index_plan(plan).items() if v is not None}
    index_s = perf_counter() - t
    qrels = {"train": read_qrels(DATA / "qrels" / "train.tsv.gz"),
             "test": read_qrels(DATA / "qrels" / "test.tsv.gz")}
    all_q = read_queries(DATA / "queries.jsonl.gz")
    queries = {s: [q for q in all_q if q.request_id in qrels[s]] for s in qrels}
    c.log(f"queries: train {len(queries['train'])}, test {len(queries['test'])}")

    # --- 1. counterfactual runs: each action once per query --------------------------
    ndcg: dict[str, dict[str, dict[str, float]]] = {}   # split → action → qid → nDCG@10
    runs: dict[str, dict[str, dict]] = {}                # split → action → run
    cands: dict[str, dict[str, list]] = {"lexical": {}, "dense": {}}
    run_s = {}
    with Pipeline(plan, log_decisions=False) as pipe:
        policy_node = pipe.components["policy"]
        try:
            for name, alloc in ACTIONS:
                pipe.components["policy"] = FixedChoice(alloc)
                t = perf_counter()
                decisions = []
                for split in ("train", "test"):
                    for batch in c.chunks(queries[split], 256):
                        decisions.extend(pipe.run_batch(batch))
                run_s[name] = round(perf_counter() - t, 2)
                run = run_of(decisions)           # the served order, as ltrr evaluate
                for d in decisions:
                    if len(alloc) == 1:
                        arm = next(iter(alloc))
                        cands[arm][d.request_id] = d.candidates.get(arm, [])
                for split in ("train", "test"):
                    sub = {q.request_id: run[q.request_id] for q in queries[split]}
                    res = evaluate_run(sub, qrels[split], ["nDCG@10"])
                    runs.setdefault(split, {})[name] = sub
                    ndcg.setdefault(split, {})[name] = {
                        q: v["nDCG@10"] for q, v in res["per_query"].items()}
                c.log(f"action {name}: train nDCG@10 "
                      f"{_mean(ndcg['train'][name]):.4f}, test {_mean(ndcg['test'][name]):.4f}"
                      f" ({run_s[name]} s)")
        finally:
            pipe.components["policy"] = policy_node
        view = plan.view

    names = [n for n, _ in ACTIONS]
    test_ids = [q.request_id for q in queries["test"]]
    texts = {q.request_id: q.text for split in queries for q in queries[split]}
    probes = {qid: probe_features(texts[qid], cands["lexical"].get(qid, []),
                                  cands["dense"].get(qid, [])) for qid in texts}
    train_ids = [q.request_id for q in queries["train"]]
    cuts = {n: tertiles([probes[q][n] for q in train_ids])
            for n in ("bm25_top", "dense_top", "overlap10")}

    def composed(choice: dict[str, str]) -> float:
        """nDCG@10 (ir-measures) of the test run made of each query's chosen action."""
        run = {q: runs["test"][choice[q]][q] for q in test_ids}
        return evaluate_run(run, qrels["test"], ["nDCG@10"])["measures"]["nDCG@10"]

    fixed = {n: composed({q: n for q in test_ids}) for n in names}
    oracle_choice = {q: max(names, key=lambda n: (ndcg["test"][n].get(q, 0.0),
                                                   n == "rrf")) for q in test_ids}
    oracle = composed(oracle_choice)
    best_train = max(names, key=lambda n: _mean(ndcg["train"][n]))
    c.log(f"fixed on test: {fixed}; oracle {oracle:.4f}; best fixed on train: {best_train}")

    # diagnostic: do the probe signals carry the choice at all? Full information (all three
    # rewards of every train query), per-action ridge regression, argmax on test.
    import numpy as np

    fnames = sorted(probes[train_ids[0]])
    X = np.array([[1.0] + [probes[q][f] for f in fnames] for q in train_ids])
    Xt = np.array([[1.0] + [probes[q][f] for f in fnames] for q in test_ids])
    preds = []
    for n in names:
        y = np.array([ndcg["train"][n].get(q, 0.0) for q in train_ids])
        w = np.linalg.solve(X.T @ X + 1.0 * np.eye(X.shape[1]), X.T @ y)
        preds.append(Xt @ w)
    ridge_choice = {q: names[int(np.argmax([pr[j] for pr in preds]))]
                    for j, q in enumerate(test_ids)}
    ridge = composed(ridge_choice)
    ridge_share = {n: round(sum(1 for v in ridge_choice.values() if v == n) / len(test_ids), 3)
                   for n in names}
    c.log(f"full-information ridge on probe signals: {ridge:.4f} share {ridge_share}")

    # --- 2. learning from bandit feedback -----------------------------------------------
    configs = [
        ("vw squarecb, query", "vw", {"exploration": "squarecb"}, "plain"),
        ("vw epsilon 0.1, query", "vw", {"exploration": "epsilon", "epsilon": 0.1}, "plain"),
        ("epsilon_greedy 0.1, query", "epsilon_greedy", {"epsilon": 0.1}, "plain"),
        ("vw squarecb, query+probe", "vw", {"exploration": "squarecb"}, "probe"),
        ("vw epsilon 0.1, query+probe", "vw", {"exploration": "epsilon", "epsilon": 0.1},
         "probe"),
        ("epsilon_greedy 0.1, query+probe tertiles", "epsilon_greedy", {"epsilon": 0.1},
         "buckets"),
        # issue 14: the query's own words and n-grams (the text group)
        ("vw squarecb, query+text", "vw",
         {"exploration": "squarecb", "features": ["query", "text"]}, "plain"),
        ("vw squarecb, query+text+probe", "vw",
         {"exploration": "squarecb", "features": ["query", "text"]}, "probe"),
    ]
    classes = {"vw": VWPolicy, "epsilon_greedy": EpsilonGreedyPolicy}
    tmp = Path(tempfile.mkdtemp(prefix="bench-scifact-selector-"))
    results: dict[str, dict] = {}
    try:
        for label, use, extra, feats in configs:
            per_seed, diffs_by_seed = [], []
            for seed in range(args.seeds):
                cls = classes[use]
                params = {"step": 100, "features": ["query"], "seed": seed, **extra}
                ctx = ComponentContext(f"policy-{len(results)}-{seed}",
                                       tmp / f"{len(results)}-{seed}" / "policy",
                                       plan.spec.base_dir, lambda: None, view)
                pol = cls(cls.Params.model_validate(params), ctx)
                pol.open()
                keys = [_key(a) for a in pol.space.actions]
                want = [_key(a) for _, a in ACTIONS]
                if sorted(keys) != sorted(want):
                    raise SystemExit(f"unexpected action space {keys}")
                act_name = {i: names[want.index(k)] for i, k in enumerate(keys)}

                def ns_of(qid: str) -> dict:
                    ns = pol.features(PolicyContext(_query(qid, texts), []))
                    if feats == "probe":
                        ns["query"] = {**ns["query"], **probes[qid]}
                    elif feats == "buckets":
                        ns["query"] = {**ns["query"], **bucketed(probes[qid], cuts)}
                    return ns

                t = perf_counter()
                rng = random.Random(seed)
                rewards = []
                for epoch in range(args.epochs):
                    order = train_ids[:]
                    rng.shuffle(order)
                    for batch in c.chunks(order, args.batch):
                        nss = [ns_of(q) for q in batch]
                        pmfs = pol.pmf(nss)
                        rows = []
                        for qid, ns, pmf in zip(batch, nss, pmfs):
                            probs = [pr for _, pr in pmf]
                            rid = f"{qid}#{epoch}"
                            i = sample(probs, draw(seed, rid))
                            r = ndcg["train"][act_name[i]].get(qid, 0.0)   # bandit feedback
                            rewards.append(r)
                            rows.append(_row(rid, texts[qid], pol.space.actions[i], probs[i], i,
                                             pmf, ns, r, epoch))
                        pol.learn(interaction_frame(rows))
                learn_s = perf_counter() - t
                # --- 3. greedy on test
                pmfs = pol.pmf([ns_of(q) for q in test_ids])
                choice = {}
                for qid, pmf in zip(test_ids, pmfs):
                    probs = [pr for _, pr in pmf]
                    choice[qid] = act_name[max(range(len(probs)), key=lambda j: probs[j])]
                value = composed(choice)
                share = {n: round(sum(1 for v in choice.values() if v == n) / len(choice), 3)
                         for n in names}
                diffs_by_seed.append([ndcg["test"][choice[q]].get(q, 0.0)
                                      - ndcg["test"]["rrf"].get(q, 0.0) for q in test_ids])
                per_seed.append({"seed": seed, "ndcg10": round(value, 4), "share": share,
                                 "train_mean_reward": round(sum(rewards) / len(rewards), 4),
                                 "train_last_epoch_reward": round(
                                     sum(rewards[-len(train_ids):]) / len(train_ids), 4),
                                 "learn_seconds": round(learn_s, 2)})
                pol.close()
                c.log(f"{label} seed {seed}: test nDCG@10 {value:.4f} share {share}")
            vals = [r["ndcg10"] for r in per_seed]
            # paired over test queries: each query's difference to RRF, mean over seeds
            per_q = [sum(d) / len(d) for d in zip(*diffs_by_seed)]
            mean_d = sum(per_q) / len(per_q)
            se_d = (sum((d - mean_d) ** 2 for d in per_q) / (len(per_q) - 1)
                    / len(per_q)) ** 0.5
            results[label] = {
                "diff_vs_rrf": {"mean": round(mean_d, 4), "se": round(se_d, 4),
                                "queries": len(per_q),
                                "ci95": [round(mean_d - 1.96 * se_d, 4),
                                         round(mean_d + 1.96 * se_d, 4)]},
                "mean": round(sum(vals) / len(vals), 4), "min": min(vals), "max": max(vals),
                "share_mean": {n: round(sum(r["share"][n] for r in per_seed) / len(per_seed), 3)
                               for n in names},
                "features": feats, "policy": use, "params": extra, "runs": per_seed}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # --- report ----------------------------------------------------------------------
    best_label = max(results, key=lambda k: results[k]["mean"])
    main_label = "vw squarecb, query+probe"
    main = results[main_label]
    metrics = [
        c.metric(f"selector nDCG@10 (test), {main_label}, greedy, mean of {args.seeds} seeds",
                 main["mean"], target=f">= {RRF_REFERENCE}",
                 passed=main["mean"] >= RRF_REFERENCE, baseline=fixed["rrf"],
                 baseline_name="RRF(BM25 100 + dense 100), same run",
                 note=f"min {main['min']}, max {main['max']}; share {main['share_mean']}; "
                      f"oracle {oracle:.4f}"),
        c.metric(f"selector − RRF nDCG@10 (test), {main_label}, paired over queries",
                 main["diff_vs_rrf"]["mean"],
                 note=f"SE {main['diff_vs_rrf']['se']:.4f} over "
                      f"{main['diff_vs_rrf']['queries']} test queries (each query's "
                      f"difference averaged over {args.seeds} seeds); 95% interval "
                      f"{main['diff_vs_rrf']['ci95']}"),
    ]
    for label, r in results.items():
        if label == main_label:
            continue
        metrics.append(c.metric(f"selector nDCG@10 (test), {label}", r["mean"],
                                baseline=fixed["rrf"], baseline_name="RRF",
                                note=f"min {r['min']}, max {r['max']}; share {r['share_mean']}; "
                                     f"paired difference to RRF {r['diff_vs_rrf']['mean']:+.4f}"
                                     f" ± {r['diff_vs_rrf']['se']:.4f} (SE)"))
    metrics += [
        c.metric("RRF k=10 (lexical 100 + dense 100) nDCG@10 (test)", fixed["rrf"],
                 target=f"{RRF_REFERENCE} ± 0.0005",
                 passed=abs(fixed["rrf"] - RRF_REFERENCE) <= 0.0005,
                 note="reproduces scifact-hybrid.yaml through this spec's action"),
        c.metric("BM25 alone nDCG@10 (test)", fixed["bm25"]),
        c.metric("dense alone nDCG@10 (test)", fixed["dense"]),
        c.metric("diagnostic: full-information ridge on probe signals, nDCG@10 (test)", ridge,
                 baseline=fixed["rrf"], baseline_name="RRF",
                 note=f"not bandit feedback: all three rewards of every train query; share "
                      f"{ridge_share}"),
        c.metric("per-query oracle nDCG@10 (test)", oracle,
                 note="share " + json.dumps({n: round(sum(1 for v in oracle_choice.values()
                                                          if v == n) / len(test_ids), 3)
                                             for n in names})),
    ]
    details = {
        "actions": {n: a for n, a in ACTIONS}, "fixed_test": {n: round(v, 4) for n, v in
                                                                fixed.items()},
        "fixed_train_mean": {n: round(_mean(ndcg["train"][n]), 4) for n in names},
        "best_fixed_on_train": best_train, "oracle_test": round(oracle, 4),
        "full_info_ridge_test": round(ridge, 4), "full_info_ridge_share": ridge_share,
        "selectors": results, "best_selector": best_label, "epochs": args.epochs,
        "batch": args.batch, "seeds": args.seeds, "index_built": built,
        "index_seconds": round(index_s, 2), "counterfactual_run_seconds": run_s,
        "probe_tertiles_train": {k: [round(x, 4) for x in v] for k, v in cuts.items()},
        "learning_path": "BanditPolicy.learn(interactions): one row per decision, "
                         "in_candidates=true, weight=nDCG@10 of the chosen action",
        "command": ".venv/bin/python benchmarks/bench_scifact_selector.py " + " ".join(sys.argv[1:]),
    }
    out = c.result("scifact_selector", title, metrics, details, started=started)
    if not args.no_doc:
        write_doc(out)
    c.emit(out, args.out)
    return 0


def _mean(d: dict[str, float]) -> float:
    return sum(d.values()) / len(d) if d else 0.0


def _key(alloc: dict[str, int]) -> str:
    return json.dumps(sorted(alloc.items()))


def _query(qid: str, texts: dict[str, str]):
    from ltrr.types import Query

    return Query(qid, texts[qid])


def _row(rid, text, alloc, prob, index, pmf, ns, reward, epoch) -> dict:
    """One interactions row: a 'judged' event on the decision, weight = its nDCG@10."""
    return {"event_id": "e" + rid, "request_id": rid, "user_id": None, "query": text,
            "entity_id": None, "type": "judged", "weight": float(reward), "position": None,
            "timestamp": float(epoch), "in_candidates": True, "arms": list(alloc),
            "allocation": [{"arm": a, "k": k} for a, k in alloc.items()],
            "probability": float(prob), "action_index": index,
            "pmf": json.dumps(pmf), "action_features": json.dumps(ns), "timings_ms": None}


def write_doc(res: dict) -> None:
    """Rewrite the measured-figures block of docs/scifact-selector.md."""
    d = res["details"]
    lines = ["| run | nDCG@10 (test) | − RRF, paired over test queries (± SE) "
             "| share BM25 / dense / RRF |", "|---|---|---|---|"]
    ft = d["fixed_test"]
    lines.append(f"| BM25 alone (lexical 200) | {ft['bm25']:.4f} | | 1 / 0 / 0 |")
    lines.append(f"| dense alone (dense 200) | {ft['dense']:.4f} | | 0 / 1 / 0 |")
    lines.append(f"| RRF k=10 (lexical 100 + dense 100) | {ft['rrf']:.4f} | | 0 / 0 / 1 |")
    for label, r in d["selectors"].items():
        s, diff = r["share_mean"], r["diff_vs_rrf"]
        lines.append(f"| selector: {label} (mean of {d['seeds']} seeds; min–max "
                     f"{r['min']:.4f}–{r['max']:.4f}) | {r['mean']:.4f} | "
                     f"{diff['mean']:+.4f} ± {diff['se']:.4f} | "
                     f"{s['bm25']:.2f} / {s['dense']:.2f} / {s['rrf']:.2f} |")
    lines.append(f"| diagnostic, not bandit: full-information ridge on the probe signals | "
                 f"{d['full_info_ridge_test']:.4f} | | "
                 + " / ".join(f"{d['full_info_ridge_share'][n]:.2f}" for n in
                              ("bm25", "dense", "rrf")) + " |")
    lines.append(f"| per-query oracle (best of the three per test query) | "
                 f"{d['oracle_test']:.4f} | | |")
    block = ("<!-- figures:begin (written by benchmarks/bench_scifact_selector.py) -->\n"
             f"Measured {res['env'].get('git', '')}, {d['epochs']} epochs over the 809 train "
             f"queries, learn batches of {d['batch']}, {res['seconds']:.0f} s in all:\n\n"
             "```\n" + d["command"] + "\n```\n\n" + "\n".join(lines) +
             "\n<!-- figures:end -->")
    if DOC.is_file():
        text = DOC.read_text(encoding="utf-8")
        text = re.sub(r"<!-- figures:begin.*?<!-- figures:end -->", lambda _: block, text,
                      flags=re.S)
        DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
