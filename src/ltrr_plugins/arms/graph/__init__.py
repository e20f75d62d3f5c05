"""``graph`` arm: related-entity expansion ("more like this") over a graph of relations.

At index time the arm builds one weighted, undirected graph (a scipy CSR adjacency) from
the relations the spec declares, each read from a Parquet file:

* ``bipartite``: an entity column and an attribute column (``artist_id`` – ``tag``).
  Each distinct attribute value becomes a namespaced node (``tag:hip hop``) linked to
  the entities carrying it, weighted by the number of rows per pair (``transform``ed).
* ``co_occurrence``: a group column and an entity column (``user_id`` groups the
  ``artist_id`` s a user played). Entities are compared by the cosine of their group
  vectors and each keeps its ``top_n`` most associated entities as neighbours.

Only catalog entities become entity nodes. The graph is persisted as the arrays of a
CSR adjacency (``indptr.npy``, ``indices.npy``, ``weight.npy``, the degrees), which
``open`` memory-maps, with its node list (``nodes.json``).

At query time the seeds — upstream candidates (``from: [lexical]``), entity slots
(``from: [understand]``), each weighing 1/rank, and non-entity slots that name
attribute nodes (``slot_attributes``) — are expanded in one of two modes:

* ``ppr``: personalized PageRank restarting at the seeds in proportion to weight ×
  weighted degree (``seed_degree_power``), by a thresholded synchronous push over the
  CSR adjacency (compiled with numba, GIL released; work proportional to the edges of
  the nodes pushing, not to the graph);
* ``embedding``: DeepWalk node vectors (weighted random walks + gensim skip-gram, built
  at index time) in a faiss inner-product index, searched with the weighted mean of
  the seed vectors.

Seeds themselves are never returned. Each candidate's ``seed`` is the seed contributing
most to it over walks of one and two steps (``ppr``) or the seed whose vector is most
similar to it (``embedding``).
"""

from ltrr_plugins.arms.graph.arm import GraphArm, GraphParams, ltrr_components
from ltrr_plugins.arms.graph.deepwalk import random_walks
from ltrr_plugins.arms.graph.relations import BipartiteRelation, CoOccurrenceRelation

__all__ = ["GraphArm", "GraphParams", "BipartiteRelation", "CoOccurrenceRelation", "random_walks",
           "ltrr_components"]
