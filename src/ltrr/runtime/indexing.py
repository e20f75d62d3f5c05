"""Building and checking the state of indexed components (``ltrr index``).

Each indexed node owns ``<state_dir>/<node id>/``, holding a ``manifest.json``
whose fingerprint covers the catalog content, the component and its params. A
build writes into a temp folder renamed into place only when complete, so a
crash never leaves a half index that later loads; the next build removes the temp
folders of killed runs (never one whose process is alive).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from ltrr.components import Component, Indexed
from ltrr.errors import StateError
from ltrr.state import atomic_dir, atomic_write_json, remove_leftovers

MANIFEST = "manifest.json"
FORMAT = 1


def fingerprint(component: Component) -> str:
    """Hash of what the node's state depends on: catalog bytes, component, its state key."""
    catalog = component.ctx.catalog
    key = {
        "format": FORMAT,
        "catalog": catalog.fingerprint,
        "catalog_id": catalog.id_column,
        "component": f"{type(component).__module__}.{type(component).__qualname__}",
        "state": component.state_key(),
    }
    lists = getattr(catalog, "lists", None)
    if lists:                            # absent when unused: older indexes stay current
        key["catalog_lists"] = lists
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_manifest(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"corrupt": True}


def check_state(component: Component, spec_path: Path) -> None:
    """Raise a StateError naming the node and the fix if its state cannot be loaded."""
    if not isinstance(component, Indexed):
        return
    node, state = component.ctx.node_id, component.ctx.state_dir
    fix = f"run `ltrr index {spec_path}`"
    manifest = read_manifest(state)
    if manifest is None and component.open_unindexed:
        return                         # builds its state when it opens (see Indexed)
    if manifest is None:
        raise StateError(f"no index built yet (expected in {state})", node=node, hint=fix)
    if manifest.get("corrupt"):
        raise StateError(f"index manifest {state / MANIFEST} is unreadable", node=node,
                         hint=f"{fix} --force")
    if manifest.get("fingerprint") != fingerprint(component):
        raise StateError("index is stale: the catalog or the params it was built from "
                         "changed", node=node, hint=fix)


def build_state(component: Component, progress: Callable[[int, int], None], *,
                force: bool = False) -> dict[str, Any] | None:
    """Build one node's state unless it is current; return the build stats or None if skipped."""
    assert isinstance(component, Indexed)
    state = component.ctx.state_dir
    remove_leftovers(state)         # of runs killed mid-build; may put back a replaced index
    fp = fingerprint(component)
    manifest = read_manifest(state)
    if not force and manifest and manifest.get("fingerprint") == fp:
        return None
    started = time.perf_counter()
    with atomic_dir(state) as tmp:
        stats = component.build(tmp, progress) or {}
        stats["seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_json(tmp / MANIFEST, {"fingerprint": fp, "node": component.ctx.node_id,
                                           "built_at": time.time(), "stats": stats})
    return stats
