"""``memory`` arm: query → entity memory (Q2E), predicted from the catalog, learned from use.

The "head query" arm. For a normalised query key it remembers which entities users
engaged with, and answers with them, best first.

* **Cold start** (``ltrr index``): predicted query–entity pairs from the catalog —
  every entity's exact name, name variants (without a leading article, compact
  "acdc" for "AC/DC"), the name before " feat. " / " & " / " vs " ..., and each
  value of attribute columns such as ``tags`` (a tag → the entities carrying it,
  scaled by popularity and by the tag's rank in the entity's list, top-N per tag).
  Written to ``predictions.parquet`` in the node's state folder.
* **Learning** (``ltrr feedback``): per (query key, entity) the decayed weighted
  engagement; evidence gradually replaces the predictions (formula on
  :class:`MemoryArm`). Kept in ``<state_dir>/<node>.learned/`` (``memory.parquet`` and
  the deltas of later learns, ``store.py``), which re-indexing never touches.
* **Lookup**: the exact key (``normalize`` of the dictionary slotter), then the
  near-duplicate key (tokens minus stopwords, sorted: "the beatles" ≈ "beatles",
  "hip hop french" ≈ "french hip hop"), then optionally a cheap fuzzy match.
"""

from ltrr_plugins.arms.memory.arm import MemoryArm, MemoryParams, ltrr_components
from ltrr_plugins.arms.memory.keys import MAX_KEY_CHARS, name_keys, near_key, query_key

__all__ = ["MemoryArm", "MemoryParams", "MAX_KEY_CHARS", "name_keys", "near_key", "query_key",
           "ltrr_components"]
