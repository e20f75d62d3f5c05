"""Finding and fingerprinting a model folder (the bundled MiniLM or a local folder), and
the offline switches set before Hugging Face libraries load."""


from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path


BUNDLED = "all-MiniLM-L6-v2"


BUNDLED_ALIASES = {BUNDLED.lower(), f"sentence-transformers/{BUNDLED}".lower()}


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
