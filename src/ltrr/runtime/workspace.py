"""A compiled plan's surroundings: its catalog (loaded once, lazily) and its components."""

from __future__ import annotations

from ltrr.catalog import Catalog
from ltrr.compiler import Plan, PlanNode
from ltrr.components import Component, ComponentContext


class Workspace:
    """Builds the components of a plan, sharing one lazily loaded catalog.

    :meth:`opened` returns a node's component opened once and shared: that is how
    an arm reaches the encoder it names (``ctx.node("minilm")``).
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self._catalog: Catalog | None = None
        self._opened: dict[str, Component] = {}

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            c = self.plan.model.catalog
            spec = self.plan.spec
            t = c.types
            self._catalog = Catalog(spec.resolve(c.path), c.id, c.format, lists=c.lists,
                                    where=spec.locate(("catalog", "path")),
                                    type_column=t.column if t else None,
                                    types=tuple(t.values) if t else (),
                                    types_where=spec.locate(("catalog", "types"))
                                    if t else None)
            self._catalog.use_map(spec.state_dir / "_catalog", c.title)   # not a node id
        return self._catalog

    def instantiate(self, node: PlanNode) -> Component:
        """A fresh, un-opened component for ``node``. An arm that retrieves some entity
        types (``types:``) gets the catalog of those rows as ``ctx.catalog``, the whole
        one as ``ctx.whole_catalog``."""
        spec = self.plan.spec
        types = self.plan.view.arm_types.get(node.id)
        ctx = ComponentContext(node_id=node.id, state_dir=spec.state_dir / node.id,
                               spec_dir=spec.base_dir,
                               catalog_loader=(lambda: self.catalog.of_types(types))
                               if types else (lambda: self.catalog),
                               plan=self.plan.view, node_loader=self.opened, types=types,
                               whole_catalog_loader=lambda: self.catalog)
        return node.registration.cls(node.params, ctx)

    def opened(self, node_id: str) -> Component:
        """The shared, opened component of ``node_id`` (instantiated on first use)."""
        comp = self._opened.get(node_id)
        if comp is None:
            comp = self.instantiate(self.plan.node(node_id))
            comp.open()
            self._opened[node_id] = comp
        return comp

    def adopt(self, node_id: str, component: Component) -> None:
        """Register an already opened component as the shared one for ``node_id``."""
        self._opened[node_id] = component

    def close(self) -> None:
        for comp in self._opened.values():
            comp.close()
        self._opened.clear()
