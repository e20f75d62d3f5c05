"""A compiled plan's surroundings: its catalog (loaded once, lazily) and component factory."""

from __future__ import annotations

from ltrr.catalog import Catalog
from ltrr.compiler import Plan, PlanNode
from ltrr.components import Component, ComponentContext


class Workspace:
    """Builds the components of a plan, sharing one lazily loaded catalog."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self._catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            c = self.plan.model.catalog
            self._catalog = Catalog(self.plan.spec.resolve(c.path), c.id, c.format)
        return self._catalog

    def instantiate(self, node: PlanNode) -> Component:
        """A fresh, un-opened component for ``node``."""
        spec = self.plan.spec
        ctx = ComponentContext(node_id=node.id, state_dir=spec.state_dir / node.id,
                               spec_dir=spec.base_dir, catalog_loader=lambda: self.catalog,
                               plan=self.plan.view)
        return node.registration.cls(node.params, ctx)
