"""A static picture of a workflow's graph (SVG), until the interactive widget takes over.

Top-level nodes are laid out left to right by their longest path from a root; a container
shows how many nodes it holds. Edges leaving through a named handle carry its name.
"""

from __future__ import annotations

import html

from cellwire.model import SOURCE, Workflow

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 150, 44, 60, 20, 12


def layers(wf: Workflow) -> dict[str, int]:
    """The column of each top-level node: its longest path from a node without inputs."""
    top = {n.id for n in wf.children(None)}
    edges = [(e.source, e.target) for e in wf.edges if e.source in top and e.target in top]
    depth = {n: 0 for n in top}
    # Bellman-Ford style relaxation; a cycle (invalid anyway) stops after len(top) rounds.
    for _ in range(len(top)):
        changed = False
        for source, target in edges:
            if depth[target] < depth[source] + 1:
                depth[target] = depth[source] + 1
                changed = True
        if not changed:
            break
    return depth


def workflow_svg(wf: Workflow) -> str:
    """The graph as a self-contained SVG document."""
    depth = layers(wf)
    columns: dict[int, list[str]] = {}
    for node_id in wf.nodes:
        if node_id in depth:
            columns.setdefault(depth[node_id], []).append(node_id)
    pos: dict[str, tuple[float, float]] = {}
    for col, ids in columns.items():
        for row, node_id in enumerate(ids):
            pos[node_id] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + max(len(columns), 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(v) for v in columns.values()), default=1) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        # viewBox and max-width: a graph wider than the output area shrinks to fit it
        # instead of being cut off on the right.
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="max-width:100%;height:auto" '
        f'font-family="sans-serif" font-size="12">'),
        ('<defs><marker id="cw-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#57606a"/>'
        "</marker></defs>"),
    ]
    for edge in wf.edges:
        if edge.source not in pos or edge.target not in pos:
            continue
        (x1, y1), (x2, y2) = pos[edge.source], pos[edge.target]
        x1, y1, y2 = x1 + BOX_W, y1 + BOX_H / 2, y2 + BOX_H / 2
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#57606a" '
                     'marker-end="url(#cw-arrow)"/>')
        if edge.source_handle != SOURCE:
            parts.append(f'<text x="{(x1 + x2) / 2}" y="{(y1 + y2) / 2 - 4}" fill="#9a6700" '
                         f'text-anchor="middle">{html.escape(edge.source_handle)}</text>')
    for node_id, (x, y) in pos.items():
        node = wf.nodes[node_id]
        inner = len(wf.descendants(node_id))
        kind = node.type + (f" ({inner} inside)" if inner else "")
        parts.append(
            f'<g><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="#f6f8fa" '
            f'stroke="#0969da"/><text x="{x + 8}" y="{y + 18}" font-weight="bold">'
            f"{html.escape(node_id[:20])}</text><text x=\"{x + 8}\" y=\"{y + 34}\" "
            f'fill="#57606a">{html.escape(kind[:24])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def workflow_text(wf: Workflow) -> str:
    """The graph as lines of text: nodes, then edges."""
    lines = [f"workflow {wf.name}: {len(wf.nodes)} nodes, {len(wf.edges)} edges"]
    for node in wf.nodes.values():
        inside = f" in {node.parent}" if node.parent else ""
        lines.append(f"  {node.id} ({node.type}){inside}")
    for edge in wf.edges:
        handle = "" if edge.source_handle == SOURCE else f" [{edge.source_handle}]"
        lines.append(f"  {edge.source} -> {edge.target}{handle}")
    return "\n".join(lines)
