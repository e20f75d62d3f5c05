"""Render a compiled plan: Mermaid text, and a PNG drawn with matplotlib."""

from __future__ import annotations

from pathlib import Path

from ltrr import extras
from ltrr.compiler import Plan
from ltrr.errors import RunError

_STAGE = {"source": 0, "encoder": 1, "slotter": 1, "policy": 2, "arm": 3, "merger": 5,
          "ranker": 6, "sink": 7}


def _label(plan: Plan, node: str) -> str:
    data = plan.graph.nodes[node]
    return f"{node}\\n({data['use']})" if data.get("use") and data["use"] != node else node


def mermaid(plan: Plan) -> str:
    """The plan as a Mermaid flowchart (edges labelled with their port type)."""
    lines = ["flowchart LR"]
    for node in plan.graph.nodes:
        label = _label(plan, node).replace("\\n", "<br/>")
        shape = ("([", "])") if plan.graph.nodes[node]["kind"] in ("source", "sink") else ("[", "]")
        lines.append(f'    {node}{shape[0]}"{label}"{shape[1]}')
    for u, v, data in plan.graph.edges(data=True):
        lines.append(f"    {u} -->|{data['type']}| {v}")
    return "\n".join(lines)


def draw_png(plan: Plan, path: Path) -> None:
    """Draw the plan left to right, one column per stage, into ``path``."""
    extras.require(extras.PLOTS, "drawing a PNG", RunError)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    g = plan.graph.copy()          # the layout's attributes stay off the plan
    layer = {}
    for node in g.nodes:
        kind = g.nodes[node]["kind"]
        layer[node] = _STAGE[kind] + (len(nx.ancestors(g, node) & {a.id for a in plan.arms})
                                      if kind == "arm" else 0)
    nx.set_node_attributes(g, layer, "layer")
    pos = nx.multipartite_layout(g, subset_key="layer")
    colors = {"encoder": "#fff2b3", "source": "#dddddd", "slotter": "#b3d9ff", "policy": "#ffd9b3", "arm": "#c2f0c2",
              "merger": "#f0c2f0", "ranker": "#ffb3b3", "sink": "#dddddd"}
    fig, ax = plt.subplots(figsize=(2.2 * (max(layer.values()) + 1), 1.2 + 1.1 * max(
        sum(1 for v in layer.values() if v == lv) for lv in set(layer.values()))))
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=14, node_size=2600,
                           edge_color="#666666")
    nx.draw_networkx_edge_labels(g, pos, ax=ax, font_size=7,
                                 edge_labels={(u, v): d["type"] for u, v, d in g.edges(data=True)})
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=2600, node_shape="s",
                           node_color=[colors[g.nodes[n]["kind"]] for n in g.nodes])
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=8,
                            labels={n: _label(plan, n).replace("\\n", "\n") for n in g.nodes})
    ax.set_title(f"ltrr plan: {plan.model.name}")
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
