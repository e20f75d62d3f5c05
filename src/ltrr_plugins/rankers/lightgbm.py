"""``lightgbm`` ranker: LambdaMART (LightGBM lambdarank) trained from feedback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ltrr import extras
from ltrr.hookspecs import hookimpl
from ltrr_plugins.rankers.learned import LearnedRanker, LearnedRankerParams

if TYPE_CHECKING:
    import numpy as np


class LightGBMParams(LearnedRankerParams):
    objective: Literal["lambdarank", "rank_xendcg"] = Field("lambdarank", description=(
        "LightGBM ranking objective: lambdarank (LambdaMART) or rank_xendcg."))
    n_estimators: int = Field(200, ge=1, description="Most boosting rounds.")
    learning_rate: float = Field(0.05, gt=0, description="Shrinkage per round.")
    num_leaves: int = Field(31, ge=2, description="Leaves per tree.")
    min_data_in_leaf: int = Field(20, ge=1, description="Fewest rows in a leaf.")
    early_stopping: int = Field(20, ge=0, description=(
        "Stop when held-out nDCG@10 has not improved for this many rounds (0: never); the "
        "refit on all data uses the best round count."))
    threads: int = Field(2, ge=1, description="Training threads (prediction uses one).")


class LightGBMRanker(LearnedRanker):
    """LambdaMART ranker (LightGBM) learned from feedback, with position-bias correction."""

    name = "lightgbm"
    requires = extras.RANKERS
    Params = LightGBMParams

    def open(self) -> None:
        super().open()
        self._rounds: int | None = None

    def fit(self, x, y, w, sizes, positions, valid) -> Any:
        import numpy as np
        import lightgbm as lgb

        p = self.params
        label = np.where(y > 0, np.maximum(1, np.rint(y)), 0).astype(np.int32)
        kw: dict[str, Any] = {"group": sizes}
        if p.position_bias == "ipw":
            kw["weight"] = w
        elif p.position_bias == "learned":
            kw["position"] = positions.astype(np.int32)
        train = lgb.Dataset(x, label, free_raw_data=True, params={"verbose": -1}, **kw)
        params = {"objective": p.objective, "learning_rate": p.learning_rate,
                  "num_leaves": p.num_leaves, "min_data_in_leaf": p.min_data_in_leaf,
                  "metric": "ndcg", "eval_at": [10], "verbose": -1, "seed": p.seed,
                  "deterministic": True, "num_threads": p.threads,
                  "label_gain": [float(2 ** i - 1) for i in range(32)]}
        if valid is not None and p.early_stopping and len(valid[3]):
            xv, yv, wv, sv, pv = valid
            lv = np.where(yv > 0, np.maximum(1, np.rint(yv)), 0).astype(np.int32)
            vkw: dict[str, Any] = {"group": sv}
            if p.position_bias == "learned":
                vkw["position"] = pv.astype(np.int32)
            vset = lgb.Dataset(xv, lv, reference=train, **vkw)
            booster = lgb.train(params, train, num_boost_round=p.n_estimators, valid_sets=[vset],
                                callbacks=[lgb.early_stopping(p.early_stopping, verbose=False)])
            self._rounds = max(1, booster.best_iteration or p.n_estimators)
            return booster
        rounds = self._rounds if valid is None and self._rounds else p.n_estimators
        return lgb.train(params, train, num_boost_round=rounds)

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        return model.predict(x, num_threads=1)

    def dump(self, model) -> bytes:
        return model.model_to_string().encode("utf-8")

    def load_model(self, data: bytes):
        import lightgbm as lgb

        return lgb.Booster(model_str=data.decode("utf-8"))


@hookimpl
def ltrr_components():
    return [LightGBMRanker]
