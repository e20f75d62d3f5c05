"""The two ways to run the model: sentence-transformers on torch (the reference), and
the ONNX export on onnxruntime with the fast tokenizer, pooling in numpy."""


from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING


from ltrr.errors import StateError


from ltrr_plugins.encoders.sentence.onnx_export import _export

if TYPE_CHECKING:
    from ltrr_plugins.encoders.sentence.encoder import SentenceEncoder


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
        # dynamic int8 quantizes activations with one scale per tensor — the whole batch,
        # padding included — so a text's vector would depend on its batch-mates: each
        # text runs alone (unpadded), and its vector is its own
        self.per_row = p.backend == "onnx-int8"
        self.dim = int(self.encode(["dimension probe"]).shape[1])

    def order(self, texts: list[str]):
        lengths = [len(e.ids) for e in self.tokenizer.encode_batch(texts)]
        return self._np.argsort([-x for x in lengths], kind="stable")

    def encode(self, texts: list[str]):
        np = self._np
        encs = self.tokenizer.encode_batch(texts) if len(texts) > 1 else \
            [self.tokenizer.encode(texts[0])]
        if self.per_row and len(encs) > 1:
            return np.concatenate([self._run([e]) for e in encs])
        return self._run(encs)

    def _run(self, encs):
        np = self._np
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
