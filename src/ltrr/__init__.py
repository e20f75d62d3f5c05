"""ltrr — learning to rank and retrieve.

A YAML spec declares a retrieval funnel (slotters, arms, policy, merge, ranker);
``ltrr.spec`` loads and validates it, ``ltrr.registry`` finds the components,
``ltrr.compiler`` turns it into a plan, ``ltrr.runtime`` executes the plan.
"""

__version__ = "0.1.0"
