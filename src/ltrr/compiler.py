"""spec + registry → :class:`Plan`, a typed networkx DAG, checked before anything loads.

The graph's nodes are ``query``, each slotter, ``policy``, each arm, ``merge``,
``ranker`` and ``output``; each edge carries the port type flowing along it.
Compiling imports component classes but never instantiates them, so no index,
JVM or model is loaded.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from typing import Any

import networkx as nx
from pydantic import BaseModel, ValidationError

from ltrr import extras
from ltrr.components import Kind, Learner, PlanView
from ltrr.errors import CompileError
from ltrr.registry import Registration, Registry, default_registry
from ltrr.spec import Spec
from ltrr.spec.errors import spec_errors
from ltrr.spec.models import ComponentSpec, PipelineSpec

RESERVED_IDS = ("query", "policy", "merge", "ranker", "output")

# What flows along each kind of edge.
QUERY, SLOTS, ACTION, CANDIDATES, MERGED, RANKED = (
    "Query", "Slots", "Action", "Candidates", "Merged", "Ranked")
OUTPUT_TYPE = {Kind.ENCODER: "Encoder", Kind.SLOTTER: SLOTS, Kind.POLICY: ACTION, Kind.ARM: CANDIDATES,
               Kind.MERGER: MERGED, Kind.RANKER: RANKED}
SEED_PORT = {SLOTS: "slots", CANDIDATES: "candidates"}


@dataclass(frozen=True)
class PlanNode:
    """One compiled node: its component, validated params and spec position."""

    id: str
    kind: Kind
    registration: Registration
    params: BaseModel
    spec: ComponentSpec
    path: tuple[str | int, ...]


@dataclass(frozen=True)
class Plan:
    """A compiled pipeline: the spec, the typed DAG and its nodes in execution order."""

    spec: Spec
    graph: nx.DiGraph
    encoders: tuple[PlanNode, ...]
    slotters: tuple[PlanNode, ...]
    policy: PlanNode
    arms: tuple[PlanNode, ...]          # topological order (upstream arms first)
    merge: PlanNode
    ranker: PlanNode
    view: PlanView

    @property
    def model(self) -> PipelineSpec:
        return self.spec.model

    @property
    def nodes(self) -> tuple[PlanNode, ...]:
        """Every component node, encoders first, in the order they are opened."""
        return (*self.encoders, *self.slotters, self.policy, *self.arms, self.merge, self.ranker)

    def node(self, node_id: str) -> PlanNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def upstream(self, arm_id: str) -> list[str]:
        return list(self.model.arms[[a.id for a in self.model.arms].index(arm_id)].from_)


def compile_spec(spec: Spec, registry: Registry | None = None) -> Plan:
    """Check ``spec`` against the registry and build the plan. Raises CompileError."""
    registry = registry or default_registry()
    m = spec.model
    _check_requires(spec)
    _check_ids(spec)
    _check_types(spec)

    encoders = tuple(_resolve(spec, registry, Kind.ENCODER, e, ("encoders", i), e.id)
                     for i, e in enumerate(m.encoders))
    slotters = tuple(_resolve(spec, registry, Kind.SLOTTER, s, ("slotters", i), s.id)
                     for i, s in enumerate(m.slotters))
    arms = {a.id: _resolve(spec, registry, Kind.ARM, a, ("arms", i), a.id)
            for i, a in enumerate(m.arms)}
    policy = _resolve(spec, registry, Kind.POLICY, m.policy, ("policy",), "policy")
    merge = _resolve(spec, registry, Kind.MERGER, m.merge, ("merge",), "merge")
    ranker = _resolve(spec, registry, Kind.RANKER, m.ranker, ("ranker",), "ranker")
    _check_installed(spec, (*encoders, *slotters, policy, *arms.values(), merge, ranker))

    graph = nx.DiGraph()
    graph.add_node("query", kind="source", type=QUERY)
    every = (*encoders, *slotters, policy, *arms.values(), merge, ranker)
    for n in every:
        graph.add_node(n.id, kind=n.kind.value, use=n.registration.name)
    graph.add_node("output", kind="sink")
    for n in every:
        _connect_references(graph, spec, n)
    for s in slotters:
        _connect(graph, spec, "query", s)
        _connect(graph, spec, s.id, policy, port="slots")
    _connect(graph, spec, "query", policy)
    for i, a in enumerate(m.arms):
        _connect(graph, spec, "policy", arms[a.id])
        for j, up in enumerate(a.from_):
            _connect_seed(graph, spec, up, arms[a.id], ("arms", i, "from", j))
        _check_seeded(spec, arms[a.id], a.from_, ("arms", i), slotters)
        _connect(graph, spec, a.id, merge)
    _check_acyclic(graph, spec)
    _connect(graph, spec, "merge", ranker)
    graph.add_edge("ranker", "output", type=RANKED)

    order = [n for n in nx.topological_sort(graph) if n in arms]
    view = PlanView(arms=tuple(arms), slotters=tuple(s.id for s in slotters),
                    budget=m.policy.budget, output_k=m.output.k,
                    arm_max_k={a.id: a.max_k for a in m.arms},
                    encoders=tuple(e.id for e in encoders),
                    types=tuple(m.catalog.types.values) if m.catalog.types else (),
                    arm_types={a.id: tuple(a.types) if a.types else None for a in m.arms})
    _check_budget(spec, view)
    for n in (*slotters, *arms.values()):
        _check_cache(spec, n)
    for n in every:
        _run_component_checks(spec, n, view)
    return Plan(spec=spec, graph=graph, encoders=encoders, slotters=slotters, policy=policy,
                arms=tuple(arms[a] for a in order), merge=merge, ranker=ranker, view=view)


# --- helpers: one check each ---------------------------------------------------------

def _check_requires(spec: Spec) -> None:
    """Each ``requires:`` entry is a PEP 508 requirement that the environment satisfies."""
    from packaging.requirements import InvalidRequirement, Requirement

    for i, text in enumerate(spec.model.requires):
        path = ("requires", i)
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise spec.error(CompileError, f"'{text}' is not a valid requirement: {exc}", path,
                             hint="write a package name, optionally with a version, "
                                  "e.g. ltrr-popularity>=0.1") from None
        try:
            version = distribution(req.name).version
        except PackageNotFoundError:
            raise spec.error(CompileError, f"this spec needs the package '{req.name}', which "
                             "is not installed", path,
                             hint=f"pip install {shlex.quote(text)}") from None
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            raise spec.error(CompileError, f"this spec needs '{text}' but {req.name} {version} "
                             "is installed", path,
                             hint=f"pip install --upgrade {shlex.quote(text)}")


def _check_installed(spec: Spec, nodes: tuple[PlanNode, ...]) -> None:
    """Every node's component can import what it needs (an optional extra of ltrr or of
    a plugin package); one error per node that cannot, at its ``use:``."""
    errors = []
    for n in nodes:
        absent = extras.missing(n.registration.cls.requires)
        if absent:
            errors.append(spec.error(
                CompileError, f"{n.kind.value} '{n.registration.name}' "
                f"{extras.describe(absent)}", n.path + ("use",),
                hint=extras.install_hint(absent)))
    if errors:
        errors[0].also = errors[1:]
        raise errors[0]


def _check_ids(spec: Spec) -> None:
    seen: dict[str, tuple] = {}
    for section in ("encoders", "slotters", "arms"):
        for i, node in enumerate(getattr(spec.model, section)):
            path = (section, i, "id")
            if node.id in RESERVED_IDS:
                raise spec.error(CompileError, f"'{node.id}' is a reserved node id", path,
                                 hint=f"pick another id; reserved: {', '.join(RESERVED_IDS)}")
            if node.id in seen:
                first = spec.locate(seen[node.id])
                raise spec.error(CompileError, f"duplicate id '{node.id}' (first used at "
                                 f"line {first.line})", path, hint="give each node its own id")
            seen[node.id] = path


def _resolve(spec: Spec, registry: Registry, kind: Kind, node: ComponentSpec,
             path: tuple, node_id: str) -> PlanNode:
    reg = registry.find(kind, node.use)
    use_path = path + ("use",)
    if reg is None:
        others = registry.other_kinds(node.use)
        if others:
            kinds = " and ".join(_a(o.kind.value) for o in others)
            raise spec.error(CompileError, f"'{node.use}' is {kinds}, not {_a(kind.value)}",
                             use_path, hint=_choices(registry, kind))
        close = registry.closest(kind, node.use)
        hint = f"did you mean '{close}'?" if close else _choices(registry, kind)
        if spec.model.requires:
            hint += f"; this spec requires: {', '.join(spec.model.requires)}"
        raise spec.error(CompileError, f"unknown {kind.value} '{node.use}'", use_path,
                         hint=hint + "; `ltrr plugins` lists what is installed")
    try:
        params = reg.cls.Params.model_validate(node.with_)
    except ValidationError as exc:
        err = spec_errors(exc, root=reg.cls.Params, data=spec.data, smap=spec.source,
                          prefix=path + ("with",))
        errors = [CompileError(e.message, where=e.where, node=node_id, field=e.field,
                               hint=e.hint) for e in (err, *err.also)]
        errors[0].also = errors[1:]
        raise errors[0] from None
    return PlanNode(node_id, kind, reg, params, node, path)


def _a(word: str) -> str:
    """``word`` with its indefinite article: 'an arm', 'a ranker'."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _choices(registry: Registry, kind: Kind) -> str:
    names = registry.names(kind)
    return f"registered {kind.value}s: {', '.join(names) or '(none)'}"


def _connect(graph: nx.DiGraph, spec: Spec, src: str, dst: PlanNode, port: str = "in") -> None:
    src_type = graph.nodes[src].get("type") or OUTPUT_TYPE[Kind(graph.nodes[src]["kind"])]
    graph.add_edge(src, dst.id, type=src_type, port=port)


def _connect_seed(graph: nx.DiGraph, spec: Spec, up: str, arm: PlanNode, path: tuple) -> None:
    if up not in graph or up in RESERVED_IDS:
        ids = [a.id for a in spec.model.arms] + [s.id for s in spec.model.slotters]
        close = difflib.get_close_matches(up, ids, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known nodes: {', '.join(ids)}"
        raise spec.error(CompileError, f"'from' names '{up}', which is not an arm or slotter",
                         path, hint=hint)
    if up == arm.id:
        raise spec.error(CompileError, f"arm '{up}' takes seeds from itself", path,
                         hint="remove it from its own 'from' list")
    src_type = OUTPUT_TYPE[Kind(graph.nodes[up]["kind"])]
    accepted = arm.registration.cls.seed_types
    if SEED_PORT.get(src_type) not in accepted:
        wants = " or ".join(sorted(accepted)) or "no seeds"
        kinds = [k.value for k in (Kind.SLOTTER, Kind.ARM)
                 if SEED_PORT[OUTPUT_TYPE[k]] in accepted]
        sources = [n for n, d in graph.nodes(data=True)
                   if d.get("kind") in kinds and n != arm.id]
        wanted = " or ".join(_a(k) for k in kinds)
        hint = ("remove this 'from' entry" if not accepted else
                f"take seeds from {wanted} instead: {', '.join(sources)}" if sources else
                f"declare {wanted} and take seeds from it")
        raise spec.error(CompileError, f"type mismatch: '{up}' produces {src_type}, but "
                         f"{arm.registration.name} arm '{arm.id}' accepts {wants}", path,
                         hint=hint)
    graph.add_edge(up, arm.id, type=src_type, port="seeds")


def _check_seeded(spec: Spec, arm: PlanNode, sources: list[str], path: tuple,
                  slotters: tuple[PlanNode, ...]) -> None:
    cls = arm.registration.cls
    if sources or not getattr(cls, "needs_seeds", False):
        return
    kinds = " or ".join(sorted(cls.seed_types))
    named = ", ".join(s.id for s in slotters) if "slots" in cls.seed_types else ""
    hint = (f"add `from: [{slotters[0].id}]`" if named else "add `from:` naming its sources") \
        + (f" (slotters: {named})" if named and len(slotters) > 1 else "") \
        + ("" if named or "slots" not in cls.seed_types else
           "; declare a slotter (e.g. `dictionary`) that finds entities in the query")
    raise spec.error(CompileError, f"{arm.registration.name} arm '{arm.id}' returns only "
                     f"what its `from:` nodes hand it ({kinds}), and has no `from:`", path,
                     hint=hint)


def _connect_references(graph: nx.DiGraph, spec: Spec, node: PlanNode) -> None:
    """Params that name other nodes (``encoder: minilm``) must name one of the right kind."""
    for field, kind in node.registration.cls.references.items():
        target = getattr(node.params, field, None)
        if target is None:
            continue
        path = node.path + ("with", field)
        known = [n for n, d in graph.nodes(data=True) if d.get("kind") == kind.value]
        if target not in known:
            close = difflib.get_close_matches(str(target), known, n=1)
            hint = (f"did you mean '{close[0]}'?" if close else
                    f"declare it under '{kind.value}s:'" if not known else
                    f"{kind.value}s: {', '.join(known)}")
            raise spec.error(CompileError, f"'{target}' is not a declared {kind.value}", path,
                             hint=hint)
        graph.add_edge(target, node.id, type=kind.value.capitalize(), port=field)


def _check_acyclic(graph: nx.DiGraph, spec: Spec) -> None:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    ids = [a.id for a in spec.model.arms]
    names = [u for u, _ in cycle] + [cycle[0][0]]
    first = min(cycle, key=lambda e: ids.index(e[1]) if e[1] in ids else 1 << 30)[1]
    i = ids.index(first)
    raise spec.error(CompileError, "arms form a cycle through 'from': " + " -> ".join(names),
                     ("arms", i, "from"), hint="arms may only take seeds from earlier stages; "
                     "break the cycle by removing one 'from' entry")


def _check_types(spec: Spec) -> None:
    """Entity types named by arms and quotas are the catalog's declared ones."""
    m = spec.model
    declared = m.catalog.types.values if m.catalog.types else None
    lists = [(("catalog", "types", "values"), declared or [])]
    lists += [(("arms", i, "types"), a.types or []) for i, a in enumerate(m.arms)]
    for path, names in lists:
        dup = next((t for t in names if names.count(t) > 1), None)
        if dup is not None:
            raise spec.error(CompileError, f"entity type '{dup}' is declared twice", path,
                             hint="list each type once")
    named = [(("arms", i, "types", j), t) for i, a in enumerate(m.arms)
             for j, t in enumerate(a.types or [])]
    named += [(("output", "quotas", t), t) for t in m.output.quotas]
    for path, t in named:
        if declared is None:
            raise spec.error(CompileError, f"names the entity type '{t}' but the catalog "
                             "declares no types", path, hint="declare them in catalog.types "
                             "({column: <type column>, values: [...]}), or remove this")
        if t not in declared:
            close = difflib.get_close_matches(t, declared, n=1)
            raise spec.error(CompileError, f"unknown entity type '{t}'", path,
                             hint=(f"did you mean '{close[0]}'? " if close else "")
                             + "catalog.types.values: " + ", ".join(declared))
    q = m.output.quotas
    for t, quota in q.items():
        if quota.max is not None and quota.min > quota.max:
            raise spec.error(CompileError, f"min {quota.min} is above max {quota.max}",
                             ("output", "quotas", t), hint="lower min or raise max")
    if sum(quota.min for quota in q.values()) > m.output.k:
        raise spec.error(CompileError, f"the quotas' mins add up to more than the "
                         f"{m.output.k} results", ("output", "quotas"),
                         hint="lower the mins or raise output.k")


def _check_budget(spec: Spec, view: PlanView) -> None:
    m = spec.model
    if m.output.k > m.policy.budget:
        raise spec.error(CompileError, f"asks for {m.output.k} results but the candidate budget "
                         f"is only {m.policy.budget}", ("output", "k"),
                         hint=f"raise policy.budget to at least {m.output.k} or lower output.k")
    capacity = sum(a.max_k for a in m.arms)
    if capacity < m.policy.budget:
        raise spec.error(CompileError, f"the budget {m.policy.budget} cannot be met: the arms "
                         f"can return at most {capacity} candidates together (sum of max_k)",
                         ("policy", "budget"), hint="lower the budget or raise the arms' max_k")


def _check_cache(spec: Spec, node: PlanNode) -> None:
    if getattr(node.spec, "cache", 0) and issubclass(node.registration.cls, Learner):
        raise spec.error(CompileError, f"'{node.id}' ({node.registration.name}) learns from "
                         "feedback, so its results change and cannot be cached",
                         node.path + ("cache",), hint="remove `cache:` from this node")


def _run_component_checks(spec: Spec, node: PlanNode, view: PlanView) -> None:
    problems = node.registration.cls.check(node.params, view)
    if not problems:
        return
    errors = []
    for p in problems:
        path = node.path + (() if p.node_level else ("with",)) + tuple(p.path)
        errors.append(spec.error(CompileError, p.message, path, hint=p.hint))
    errors[0].also = errors[1:]
    raise errors[0]


def load_plan(path: Any, registry: Registry | None = None, *, check_data: bool = True
              ) -> Plan:
    """Load, validate and compile a spec file in one step; with ``check_data``, also
    check the data files it names (``ltrr.data_checks``: schemas only)."""
    from ltrr.spec import load_spec

    plan = compile_spec(load_spec(path), registry)
    if check_data:
        from ltrr.data_checks import check_data as check

        check(plan)
    return plan
