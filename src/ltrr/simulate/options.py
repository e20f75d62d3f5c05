"""The options of ``ltrr simulate``: user-model ``--with`` values, the policies and rankers
to compare (names or YAML blocks), the output folder; and what a run lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltrr.compiler import Plan
from ltrr.errors import RunError
from ltrr.registry import Registry, default_registry
from ltrr.simulate.engine import PolicyChoice


def parse_with(items: list[str] | None) -> dict[str, Any]:
    """``["eta=0.5", "mix={exact: 1}"]`` → params; values are YAML (numbers, lists, maps)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RunError(f"--with '{item}' is not key=value", field="--with",
                           hint="e.g. --with eta=0.5 --with 'mix={exact: 1, tag: 1}'")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise RunError(f"--with {key}: value is not valid YAML ({exc.problem})",
                           field=f"with.{key.strip()}",
                           hint="quote structured values: --with 'mix={exact: 1}'") from None
    return out


def component_blocks(kind, text: str, spec_use: str, spec_with: dict[str, Any], option: str,
                     example: str, registry: Registry) -> list[tuple[str, dict[str, Any], str | None]]:
    """``(label, {use, with}, source file)`` for each item of a comma-separated option:
    registered names of ``kind`` or YAML files holding a block (``use``, optional ``with``
    and ``label``, default the file's stem). A name runs with the spec's ``with`` when the
    spec uses it, else with its defaults."""
    from ltrr.spec.loader import load_yaml

    noun = kind.value
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item.endswith((".yaml", ".yml")):
            path = Path(item)
            data, _ = load_yaml(path)
            if not isinstance(data, dict) or not isinstance(data.get("use"), str) \
                    or set(data) - {"use", "with", "label"} \
                    or not isinstance(data.get("with", {}), dict):
                raise RunError(f"a {noun} file holds a mapping with 'use' (a {noun} name), "
                               "optional 'with' (its params) and optional 'label'",
                               where=str(path), field=option, hint=f"e.g. {example}")
            out.append((str(data.get("label") or path.stem),
                        {"use": data["use"], "with": dict(data.get("with") or {})}, str(path)))
        elif registry.find(kind, item) is not None:
            out.append((item, {"use": item, "with": dict(spec_with) if item == spec_use else {}},
                        None))
        else:
            close = registry.closest(kind, item)
            raise RunError(f"unknown {noun} '{item}'", field=option,
                           hint=(f"did you mean '{close}'? " if close else "")
                           + "installed: " + ", ".join(registry.names(kind))
                           + f"; or give a YAML file with a {noun} block")
    return out


def policy_choices(plan: Plan, text: str | None, registry: Registry | None = None
                   ) -> list[PolicyChoice]:
    """``--policies``: registered policy names or YAML files holding a policy block
    (see :func:`component_blocks`). Default: the spec's own policy."""
    from ltrr.components import Kind

    spec_policy = plan.model.policy
    if not text:
        return [PolicyChoice(spec_policy.use, spec_policy.use, dict(spec_policy.with_))]
    blocks = component_blocks(Kind.POLICY, text, spec_policy.use, spec_policy.with_,
                              "--policies", "{use: static, with: {allocation: {lexical: 100}}, "
                              "label: lexical}", registry or default_registry())
    return [PolicyChoice(label, b["use"], b["with"], source=src) for label, b, src in blocks]


def ranker_choices(plan: Plan, text: str | None, registry: Registry | None = None
                   ) -> list[tuple[str, dict[str, Any]]]:
    """``--rankers``: ``(label, ranker block)`` pairs (see :func:`component_blocks`)."""
    from ltrr.components import Kind

    spec_ranker = plan.model.ranker
    blocks = component_blocks(Kind.RANKER, text or "", spec_ranker.use, spec_ranker.with_,
                              "--rankers", "{use: lightgbm, with: {popularity: popularity}}",
                              registry or default_registry())
    return [(label, b) for label, b, _ in blocks]


def with_rankers(policies: list[PolicyChoice], rankers: list[tuple[str, dict[str, Any]]]
                 ) -> list[PolicyChoice]:
    """Every policy with every ranker (labels ``policy+ranker`` when several rankers)."""
    if not rankers:
        return policies
    return [PolicyChoice(p.label if len(rankers) == 1 else f"{p.label}+{label}", p.use,
                         dict(p.params), p.source, block)
            for p in policies for label, block in rankers]


def parse_seeds(text: str | None, seed: int = 0) -> list[int]:
    """``--seeds``: ``0,1,2,3`` → those seeds; ``N`` → N seeds from ``seed`` on; none →
    ``[seed]``."""
    if not text:
        return [seed]
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(seed, seed + n))
    except ValueError:
        raise RunError(f"--seeds '{text}' is neither a list of seeds nor a count",
                       field="--seeds", hint="e.g. --seeds 0,1,2,3 or --seeds 4") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise RunError(f"--seeds '{text}' names a seed twice or none", field="--seeds",
                       hint="e.g. --seeds 0,1,2,3")
    return seeds


def default_out(plan: Plan, args, seeds: list[int] | None = None) -> Path:
    seeds = seeds or [args.seed]
    tag = ",".join(str(s) for s in seeds) if len(seeds) > 1 else str(seeds[0])
    return plan.spec.state_dir / "simulations" / f"{args.user_model}-n{args.sessions}-s{tag}"


def losses(result) -> list[tuple[str, str]]:
    """``(warning, problem)`` per policy and arm that some answers lost (a count and the
    first request). The simulation waits for every arm (no serving deadlines), so a
    loss is an arm that failed."""
    out = []
    for run in result.runs:
        for arm, n in sorted(run.dropped.items()):
            rid, note = run.first_loss.get(arm, ("?", ""))
            out.append((f"policy {run.label}: arm '{arm}' lost in {n} answers (served and "
                        f"probed); first: request {rid}: {note}",
                        f"policy {run.label} lost arm '{arm}' in {n} answers"))
    return out
