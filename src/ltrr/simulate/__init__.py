"""Simulated users for ``ltrr simulate``: the plugin contract and the engine.

This package's top level holds only the light plugin contract (:class:`UserModel` and
what it exchanges with the engine), so the registry can check user-model classes
without importing numpy, polars or matplotlib. The engine lives in
:mod:`ltrr.simulate.engine`, the regret accounting in :mod:`ltrr.simulate.regret`
and the plots in :mod:`ltrr.simulate.plots`.
"""

from ltrr.simulate.model import Engagement, Session, UserModel, UserModelContext

__all__ = ["Engagement", "Session", "UserModel", "UserModelContext"]
