"""``linear`` ranker: an IPW-weighted logistic model over standardised features."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ltrr import extras
from ltrr.hookspecs import hookimpl
from ltrr_plugins.rankers.learned import LearnedRanker, LearnedRankerParams

if TYPE_CHECKING:
    import numpy as np


class LinearParams(LearnedRankerParams):
    l2: float = Field(1.0, gt=0, description="Inverse regularisation strength C of the "
                                             "logistic regression (smaller = stronger).")
    max_iter: int = Field(200, ge=10, description="Solver iterations.")


class LinearRanker(LearnedRanker):
    """Linear ranker (logistic regression, IPW-weighted) learned from feedback."""

    name = "linear"
    requires = extras.LINEAR
    Params = LinearParams

    def fit(self, x, y, w, sizes, positions, valid) -> Any:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std == 0] = 1.0
        z = (x - mean) / std
        target = (y > 0).astype(np.int32)
        if target.min() == target.max():      # one class only: nothing to separate yet
            return {"mean": mean, "std": std, "coef": np.zeros(x.shape[1]), "bias": 0.0}
        weight = w if self.params.position_bias == "ipw" else None
        clf = LogisticRegression(C=self.params.l2, max_iter=self.params.max_iter)
        clf.fit(z, target, sample_weight=weight)
        return {"mean": mean, "std": std, "coef": clf.coef_[0], "bias": float(clf.intercept_[0])}

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        return ((x - model["mean"]) / model["std"]) @ model["coef"] + model["bias"]

    def dump(self, model) -> bytes:
        import numpy as np

        return json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                           for k, v in model.items()}).encode("utf-8")

    def load_model(self, data: bytes):
        import numpy as np

        obj = json.loads(data)
        return {"mean": np.asarray(obj["mean"], dtype=np.float64),
                "std": np.asarray(obj["std"], dtype=np.float64),
                "coef": np.asarray(obj["coef"], dtype=np.float64), "bias": float(obj["bias"])}


@hookimpl
def ltrr_components():
    return [LinearRanker]
