/** From the kernel's graph to React Flow's nodes and edges, the layout of nodes without a
 * saved position, and the checks a new connection must pass before it is sent. */
import dagre from "@dagrejs/dagre";
import { Position } from "@xyflow/react";
import type { Edge, Node, NodeHandle } from "@xyflow/react";
import type { CwEdge, CwNode, Position as Point } from "./types";

export const NODE_WIDTH = 200;
export const HEADER = 44;
export const PAD = 24;
const TARGET = "target";

export type NodeData = { node: CwNode };
export type FlowNode = Node<NodeData>;
export type FlowEdge = Edge<{ handle: string }>;

/** Lumino (JupyterLab's keymap) skips events from elements carrying this attribute, so keys
 * pressed on a focused node or edge never reach the notebook's shortcuts. */
export const SUPPRESS = { "data-lm-suppress-shortcuts": "true" } as Record<string, string>;

export function nodeHeight(node: CwNode): number {
  return Math.max(76, 40 + node.handles.length * 18);
}

export type Box = { x: number; y: number; w: number; h: number };
type Size = { w: number; h: number };

/** Above this many nodes in one level dagre takes about a second; a plain layered layout
 * (longest path ranks, one barycentre pass) takes milliseconds. */
export const DAGRE_LIMIT = 150;

export function layered(
  members: CwNode[],
  edges: CwEdge[],
  sizes: Map<string, Size>,
  offset: { x: number; y: number },
): Map<string, { x: number; y: number }> {
  const ids = new Set(members.map((m) => m.id));
  const preds = new Map<string, string[]>();
  const succs = new Map<string, string[]>();
  for (const e of edges) {
    if (!ids.has(e.source) || !ids.has(e.target)) continue;
    (succs.get(e.source) ?? succs.set(e.source, []).get(e.source)!).push(e.target);
    (preds.get(e.target) ?? preds.set(e.target, []).get(e.target)!).push(e.source);
  }
  const indeg = new Map(members.map((m) => [m.id, preds.get(m.id)?.length ?? 0]));
  const rank = new Map<string, number>();
  const queue = members.filter((m) => indeg.get(m.id) === 0).map((m) => m.id);
  for (const id of queue) rank.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const t of succs.get(id) ?? []) {
      rank.set(t, Math.max(rank.get(t) ?? 0, rank.get(id)! + 1));
      indeg.set(t, indeg.get(t)! - 1);
      if (indeg.get(t) === 0) queue.push(t);
    }
  }
  const ranks: string[][] = [];
  for (const m of members) {
    const r = rank.get(m.id) ?? 0; // nodes on a cycle (invalid anyway) go first
    (ranks[r] ??= []).push(m.id);
  }
  const order = new Map<string, number>();
  ranks.forEach((ids_, r) => {
    if (r > 0) {
      const key = (id: string) => {
        const ps = (preds.get(id) ?? []).map((p) => order.get(p) ?? 0);
        return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : Infinity;
      };
      ids_.sort((a, b) => key(a) - key(b));
    }
    ids_.forEach((id, i) => order.set(id, i));
  });
  const out = new Map<string, { x: number; y: number }>();
  const heights = ranks.map((ids_) => ids_.reduce((h, id) => h + sizes.get(id)!.h + 30, -30));
  const tallest = Math.max(0, ...heights);
  let x = offset.x;
  ranks.forEach((ids_, r) => {
    let y = offset.y + (tallest - heights[r]) / 2;
    let width = 0;
    for (const id of ids_) {
      const s = sizes.get(id)!;
      out.set(id, { x, y });
      y += s.h + 30;
      width = Math.max(width, s.w);
    }
    x += width + 70;
  });
  return out;
}

/** Positions (relative to the container, as React Flow wants for sub-flows) and sizes. */
export function layout(nodes: CwNode[], edges: CwEdge[]): Map<string, Box> {
  const boxes = new Map<string, Box>();
  const byParent = new Map<string | null, CwNode[]>();
  const ids = new Set(nodes.map((n) => n.id));
  for (const n of nodes) {
    const parent = n.parent && ids.has(n.parent) ? n.parent : null;
    if (!byParent.has(parent)) byParent.set(parent, []);
    byParent.get(parent)!.push(n);
  }
  const level = (parent: string | null): { w: number; h: number } => {
    const members = byParent.get(parent) ?? [];
    const sizes = new Map<string, { w: number; h: number }>();
    for (const m of members) {
      sizes.set(m.id, m.container ? level(m.id) : { w: NODE_WIDTH, h: nodeHeight(m) });
    }
    const offset = parent === null ? { x: 0, y: 0 } : { x: PAD, y: HEADER + PAD };
    let auto: Map<string, { x: number; y: number }> | null = null;
    if (members.some((m) => !m.position) && members.length > DAGRE_LIMIT) {
      auto = layered(members, edges, sizes, offset);
    } else if (members.some((m) => !m.position)) {
      const g = new dagre.graphlib.Graph();
      g.setGraph({ rankdir: "LR", nodesep: 24, ranksep: 50, marginx: 0, marginy: 0 });
      g.setDefaultEdgeLabel(() => ({}));
      for (const m of members) g.setNode(m.id, { width: sizes.get(m.id)!.w, height: sizes.get(m.id)!.h });
      const memberIds = new Set(members.map((m) => m.id));
      for (const e of edges) {
        if (memberIds.has(e.source) && memberIds.has(e.target)) g.setEdge(e.source, e.target);
      }
      dagre.layout(g);
      auto = new Map();
      for (const m of members) {
        const p = g.node(m.id);
        const s = sizes.get(m.id)!;
        auto.set(m.id, { x: p.x - s.w / 2 + offset.x, y: p.y - s.h / 2 + offset.y });
      }
    }
    let right = 0;
    let bottom = 0;
    for (const m of members) {
      const s = sizes.get(m.id)!;
      const p = m.position ?? auto!.get(m.id)!;
      boxes.set(m.id, { x: p.x, y: p.y, w: s.w, h: s.h });
      right = Math.max(right, p.x + s.w);
      bottom = Math.max(bottom, p.y + s.h);
    }
    return { w: Math.max(320, right + PAD), h: Math.max(180, bottom + PAD) };
  };
  level(null);
  return boxes;
}

/** Handle size as drawn (6 px and a 1 px border), for the handle boxes given up front. */
const HANDLE = 8;

/** Where the handles of a node of ``w`` x ``h`` sit, as React Flow would measure them: given
 * with the node, edges are drawn in the first frame instead of after a measuring pass. */
function handleBoxes(n: CwNode, w: number, h: number): NodeHandle[] {
  const out: NodeHandle[] = [];
  if (!(n.type.endsWith("start") && n.type !== "start")) {
    out.push({ id: TARGET, type: "target", position: Position.Left, x: -HANDLE / 2, y: h / 2 - HANDLE / 2, width: HANDLE, height: HANDLE });
  }
  const count = n.handles.length;
  n.handles.forEach((id, i) => {
    const top = count === 1 ? h / 2 : ((i + 1) * h) / (count + 1);
    out.push({ id, type: "source", position: Position.Right, x: w - HANDLE / 2, y: top - HANDLE / 2, width: HANDLE, height: HANDLE });
  });
  return out;
}

export function toFlowNodes(nodes: CwNode[], edges: CwEdge[], selected: Set<string>): FlowNode[] {
  const boxes = layout(nodes, edges);
  const ids = new Set(nodes.map((n) => n.id));
  return nodes.map((n) => {
    const box = boxes.get(n.id)!;
    const inside = n.parent && ids.has(n.parent) ? n.parent : undefined;
    const flow: FlowNode = {
      id: n.id,
      type: n.container ? "cwContainer" : "cw",
      position: { x: box.x, y: box.y },
      data: { node: n },
      selected: selected.has(n.id),
      domAttributes: SUPPRESS,
      // Sizes known up front: React Flow shows the node at once, without measuring it first.
      width: box.w,
      height: box.h,
      handles: handleBoxes(n, box.w, box.h),
      ...(n.container ? { style: { width: box.w, height: box.h } } : {}),
    };
    if (inside) {
      flow.parentId = inside;
      flow.extent = "parent";
    }
    return flow;
  });
}

export function toFlowEdges(edges: CwEdge[], selected: Set<string>): FlowEdge[] {
  return edges.map((e) => ({
    id: e.id,
    source: e.source,
    target: e.target,
    sourceHandle: e.source_handle,
    targetHandle: TARGET,
    type: "cw",
    data: { handle: e.source_handle },
    selected: selected.has(e.id),
    domAttributes: SUPPRESS,
  }));
}

export type ConnectionLike = {
  source: string | null;
  target: string | null;
  sourceHandle?: string | null;
};

/** Why ``conn`` cannot be added, or null when it can. Mirrors the kernel's check_connect. */
export function connectionProblem(conn: ConnectionLike, nodes: CwNode[], edges: CwEdge[]): string | null {
  const { source, target } = conn;
  const handle = conn.sourceHandle || "source";
  if (!source || !target) return "connect a node's output to another node's input";
  if (source === target) return "a node cannot connect to itself";
  const a = nodes.find((n) => n.id === source);
  const b = nodes.find((n) => n.id === target);
  if (!a || !b) return "unknown node";
  if ((a.parent ?? null) !== (b.parent ?? null)) {
    return "both ends must be in the same container (or both outside)";
  }
  if (!a.handles.includes(handle)) return `${source} has no handle ${handle}`;
  if (edges.some((e) => e.source === source && e.target === target && e.source_handle === handle)) {
    return `${source} -> ${target} is already connected`;
  }
  if (reaches(target, source, edges)) return `${source} -> ${target} would make a cycle`;
  return null;
}

export function reaches(from: string, to: string, edges: CwEdge[]): boolean {
  const out = new Map<string, string[]>();
  for (const e of edges) {
    if (!out.has(e.source)) out.set(e.source, []);
    out.get(e.source)!.push(e.target);
  }
  const seen = new Set([from]);
  const todo = [from];
  while (todo.length) {
    const cur = todo.pop()!;
    if (cur === to) return true;
    for (const nxt of out.get(cur) ?? []) {
      if (!seen.has(nxt)) {
        seen.add(nxt);
        todo.push(nxt);
      }
    }
  }
  return false;
}

/** Room left around a node placed by :func:`freeSpot`. */
const GAP = 24;

/** The free place nearest ``at`` for a new node of ``size`` among ``boxes`` (the nodes at the
 * same level): tried on rings of growing radius around ``at``, right and down first, so a
 * node added from the palette never lands on another. */
export function freeSpot(at: Point, size: Size, boxes: Box[]): Point {
  const free = (x: number, y: number) =>
    boxes.every((b) => x + size.w + GAP <= b.x || b.x + b.w + GAP <= x || y + size.h + GAP <= b.y || b.y + b.h + GAP <= y);
  const start = { x: Math.round(at.x - size.w / 2), y: Math.round(at.y - size.h / 2) };
  if (free(start.x, start.y)) return start;
  const stepX = size.w + GAP;
  const stepY = Math.round(size.h / 2 + GAP);
  for (let r = 1; r < 60; r++) {
    const ring: Point[] = [];
    for (let dx = -r; dx <= r; dx++) {
      for (let dy = -r; dy <= r; dy++) {
        if (Math.max(Math.abs(dx), Math.abs(dy)) !== r) continue;
        ring.push({ x: start.x + dx * stepX, y: start.y + dy * stepY });
      }
    }
    // Nearest first; at equal distance, to the right of and below the centre.
    ring.sort((a, b) => dist(a, start) - dist(b, start) || b.x - a.x || b.y - a.y);
    const found = ring.find((p) => free(p.x, p.y));
    if (found) return found;
  }
  const bottom = Math.max(0, ...boxes.map((b) => b.y + b.h));
  return { x: start.x, y: bottom + GAP };
}

function dist(a: Point, b: Point): number {
  return Math.hypot(a.x - b.x, a.y - b.y);
}
