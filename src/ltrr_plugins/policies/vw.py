"""``vw`` policy: a contextual bandit over allocations with Vowpal Wabbit ``--cb_explore_adf``.

Each decision is one multi-line VW example: a ``shared`` line with the context
namespaces (``|Q`` query, ``|S`` slots, ``|T`` time, ``|U`` user) and one line per
action of the space (``|A`` an indicator of the action, each arm's inclusion and
share; ``|Y`` each included arm's recent yield × share). VW returns the pmf of its
exploration algorithm; the action is drawn from it with the seeded per-request
draw. Learning feeds the logged action back with cost ``-reward`` and the logged
probability. The model (``ws.save``) is embedded, base64, in the policy's state file,
written atomically, and reloaded (``-i``) on open.
"""

from __future__ import annotations

import base64
import logging
import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from ltrr import extras
from ltrr.components import PlanView, Problem
from ltrr.hookspecs import hookimpl
from ltrr_plugins.policies.base import BanditParams, BanditPolicy
from ltrr_plugins.policies.features import (
    VW_NAMESPACE,
    FeatureGroup,
    FeatureParams,
    Namespaces,
    vw_action_line,
    vw_shared_line,
)

log = logging.getLogger(__name__)
MODEL = "model.vw"
_INTERACTION = re.compile(r"^[QWSETUAY]{2,3}$")


class VWParams(BanditParams):
    """Params of the Vowpal Wabbit policy."""

    # VW hashes features, so the query's own words and n-grams (text) are cheap to learn
    features: list[FeatureGroup] = Field(
        default_factory=lambda: ["query", "text", "slots"],
        description=FeatureParams.model_fields["features"].description)

    # Defaults from the 5,000-session Last.fm simulation (docs/simulation.md): epsilon 0.05
    # with learning rate 0.1 reached recall 0.853 vs 0.793 for squarecb (gamma_scale 100).
    exploration: Literal["epsilon", "squarecb", "softmax", "bag", "cover"] = Field(
        "epsilon", description=(
            "Exploration algorithm: epsilon (greedy + uniform), squarecb (inverse-gap "
            "weighting, gamma_scale/gamma_exponent), softmax (lambda), bag (bootstrap "
            "ensemble of `bag` policies), cover (online cover of `cover` policies, psi)."))
    epsilon: float = Field(0.05, ge=0, le=1, description=(
        "Uniform exploration probability (epsilon; also mixed into bag and cover)."))
    gamma_scale: float = Field(10.0, gt=0, description="squarecb: gamma scale.")
    gamma_exponent: float = Field(0.5, ge=0, description="squarecb: gamma exponent.")
    lambda_: float = Field(10.0, alias="lambda", description=(
        "softmax: inverse temperature (larger → greedier)."))
    bag: int = Field(5, ge=1, description="bag: number of bootstrapped policies.")
    cover: int = Field(5, ge=1, description="cover: number of cover policies.")
    psi: float = Field(1.0, ge=0, description="cover: disagreement parameter.")
    cb_type: Literal["ips", "dr", "mtr"] = Field("mtr", description=(
        "How costs are estimated from logged probabilities: ips, dr or mtr "
        "(multi-task regression; the usual choice for cb_explore_adf)."))
    interactions: list[str] | None = Field(None, description=(
        "Quadratic/cubic namespace interactions as letters (Q query, W text, S slots, E "
        "evidence, T time, U user, A action, Y yield), e.g. [QA, SA]. Default: every "
        "context group × A."))
    learning_rate: float = Field(0.1, gt=0, description="VW -l (learning rate).")
    power_t: float | None = Field(None, ge=0, description="VW --power_t (default VW's 0.5).")
    l2: float = Field(0.0, ge=0, description="VW --l2 regularisation.")
    bits: int = Field(18, ge=10, le=28, description="VW -b: bits of the feature hash table.")


class VWPolicy(BanditPolicy):
    """Contextual bandit over allocations with Vowpal Wabbit (cb_explore_adf)."""

    name = "vw"
    requires = extras.BANDIT
    Params = VWParams

    @classmethod
    def check(cls, params: VWParams, plan: PlanView) -> list[Problem]:
        problems = super().check(params, plan)
        for i, inter in enumerate(params.interactions or []):
            if not _INTERACTION.match(inter):
                problems.append(Problem(f"interaction '{inter}' is not 2–3 namespace letters",
                                        ("interactions", i),
                                        hint="letters: Q query, S slots, T time, U user, "
                                             "A action, Y yield; e.g. QA"))
        return problems

    def vw_args(self) -> str:
        """The VW command line this policy's params describe."""
        p = self.params
        args = ["--cb_explore_adf", f"--cb_type {p.cb_type}", f"-b {p.bits}",
                f"-l {p.learning_rate:g}", f"--random_seed {p.seed}"]
        if p.exploration == "epsilon":
            args.append(f"--epsilon {p.epsilon:g}")
        elif p.exploration == "squarecb":
            args.append(f"--squarecb --gamma_scale {p.gamma_scale:g} "
                        f"--gamma_exponent {p.gamma_exponent:g}")
        elif p.exploration == "softmax":
            args.append(f"--softmax --lambda {p.lambda_:g}")
        elif p.exploration == "bag":
            args.append(f"--bag {p.bag} --epsilon {p.epsilon:g}")
        elif p.exploration == "cover":
            args.append(f"--cover {p.cover} --psi {p.psi:g} --epsilon {p.epsilon:g}")
        inters = p.interactions
        if inters is None:
            inters = [VW_NAMESPACE[g] + "A" for g in p.features]
        args.extend(f"-q {i}" if len(i) == 2 else f"--cubic {i}" for i in inters)
        if p.power_t is not None:
            args.append(f"--power_t {p.power_t:g}")
        if p.l2:
            args.append(f"--l2 {p.l2:g}")
        return " ".join(args)

    # --- model lifecycle ---------------------------------------------------------------

    def _workspace(self, extra: str = ""):
        import vowpalwabbit  # heavy-ish import: only when the policy opens

        return vowpalwabbit.Workspace(f"{self.vw_args()} --quiet {extra}".strip(),
                                      enable_logging=False)

    def _init_model(self) -> None:
        self.ws = self._workspace()
        self._lines: dict[tuple, list[str]] = {}
        self._fast = _fast_calls(self.ws)
        self._warned_count = False

    def _restore(self, model: dict) -> None:
        saved = model.get("args")
        if saved != self.vw_args():
            raise self._bad_state(f"the learned VW model was trained with `{saved}`, but the "
                                  f"params now say `{self.vw_args()}`")
        try:
            data = base64.b64decode(model["vw"])
            with tempfile.TemporaryDirectory(dir=self.ctx.learned_dir) as tmp:
                path = Path(tmp) / MODEL
                path.write_bytes(data)
                ws = self._workspace(f"-i {path}")
        except Exception as exc:
            raise self._bad_state(f"cannot load the VW model saved in "
                                  f"{self._state_path}: {exc}") from exc
        self.ws.finish()
        self.ws = ws
        self._fast = _fast_calls(ws)

    def _persist(self) -> dict:
        self.ctx.learned_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.ctx.learned_dir) as tmp:
            path = Path(tmp) / MODEL
            self.ws.save(str(path))          # VW saves to files only; embed its bytes
            data = path.read_bytes()
        return {"args": self.vw_args(), "vw": base64.b64encode(data).decode("ascii")}

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.finish()
            self.ws = None

    # --- examples ----------------------------------------------------------------------

    def _action_lines(self, yields: dict[str, float] | None) -> list[str]:
        key = tuple(sorted((yields or {}).items()))
        lines = self._lines.get(key)
        if lines is None:
            budget = self.space.budget
            lines = [vw_action_line("_".join(f"{a}{k}" for a, k in sorted(alloc.items())),
                                    alloc, budget, yields or {})
                     for alloc in self.space.actions]
            if len(self._lines) > 64:
                self._lines.clear()
            self._lines[key] = lines
        return lines

    def example(self, ns: Namespaces, label: tuple[int, float, float] | None = None,
                shared: str | None = None) -> list[str]:
        """The multi-line VW example of a context; ``label`` = (action, cost, probability);
        ``shared``: the context's shared line when already made."""
        lines = [shared or vw_shared_line(ns)]
        actions = self._action_lines(ns.get("yield"))
        if label is None:
            lines.extend(actions)
        else:
            i, cost, p = label
            lines.extend(actions)
            lines[1 + i] = f"0:{cost:.6g}:{p:.6g} {actions[i]}"
        return lines

    def _pmfs(self, feats: list[Namespaces]) -> list[list[float]]:
        out = []
        n = len(self.space)
        for ns in feats:
            lines = self.example(ns)
            if self._fast:
                parse, predict, _, finish = self._fast
                ec = parse("\n".join(lines))
                predict(self.ws, ec)
                raw = ec[0].get_action_scores()
                finish(self.ws, ec)
            else:
                raw = self.ws.predict(lines)
            if len(raw) != n:               # never expected: say so, play uniformly
                if not self._warned_count:
                    self._warned_count = True
                    log.warning("node '%s': VW scored %d actions for %d; playing uniformly "
                                "(warned once)", self.ctx.node_id, len(raw), n)
                raw = [1.0] * n
            total = float(sum(raw))
            out.append([float(p) / total for p in raw] if total > 0 else [1.0 / n] * n)
        return out

    def _learn(self, examples) -> None:
        shared: dict[int, str] = {}     # outcomes share identical features' dicts
        for ns, i, p, r in examples:
            line = shared.get(id(ns))
            if line is None:
                line = shared[id(ns)] = vw_shared_line(ns)
            lines = self.example(ns, (i, -r, p), line)
            if self._fast:
                parse, _, learn, finish = self._fast
                ec = parse("\n".join(lines))
                learn(self.ws, ec)
                finish(self.ws, ec)
            else:
                self.ws.learn(lines)


def _fast_calls(ws):
    """pylibvw's own parse / predict / finish calls, skipping pyvw's per-line Python
    wrappers (4-5x faster on 35 actions); None when this VW build lacks them."""
    try:
        from vowpalwabbit import pyvw

        lib = pyvw.pylibvw.vw
        return ws._parse, lib.predict_multi, lib.learn_multi, lib._finish_example_multi_ex
    except (ImportError, AttributeError):
        return None


@hookimpl
def ltrr_components():
    return [VWPolicy]
