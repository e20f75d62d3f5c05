"""The one-off ONNX export of a model's transformer (in a subprocess, with torch), and its
dynamic int8 quantization; cached by model fingerprint under the node's cache folder."""


from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ltrr.errors import StateError
from ltrr.files import link_or_copy


from ltrr_plugins.encoders.sentence.model import _offline, model_fingerprint

if TYPE_CHECKING:
    from ltrr_plugins.encoders.sentence.encoder import SentenceEncoder


EXPORT_FORMAT = 1      # bump when the ONNX export recipe changes


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
                link_or_copy(have, tmp / have.name)
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


if __name__ == "__main__":   # python -m ltrr_plugins.encoders.sentence.onnx_export export DIR OUT
    import sys

    args = sys.argv[1:]
    if len(args) not in (3, 4) or args[0] != "export" or args[3:] not in ([], ["--int8"]):
        sys.exit("usage: python -m ltrr_plugins.encoders.sentence.onnx_export export MODEL_DIR FOLDER "
                 "[--int8]")
    _offline()
    export_onnx(Path(args[1]), Path(args[2]), int8=args[3:] == ["--int8"])
