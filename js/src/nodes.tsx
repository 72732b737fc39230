/** How nodes and edges are drawn: by type (colour, icon), with one source handle per branch
 * and the run status of the node. */
import { Fragment, memo, useCallback, useLayoutEffect, useMemo, useReducer, useRef } from "react";
import type { CSSProperties } from "react";
import { getBezierPath, Handle, Position } from "@xyflow/react";
import type { EdgeProps, NodeProps } from "@xyflow/react";
import { useEditor } from "./context";
import { nodeHeight } from "./graph";
import type { FlowEdge, FlowNode } from "./graph";
import type { CwNode, StatusEntry } from "./types";

type Look = { color: string; icon: string };

const LOOKS: Record<string, Look> = {
  start: { color: "#2f7d5b", icon: "▶" },
  end: { color: "#8a3b3b", icon: "■" },
  answer: { color: "#a05a1c", icon: "✎" },
  llm: { color: "#4a56c9", icon: "✦" },
  code: { color: "#3d6b8a", icon: "{}" },
  "if-else": { color: "#7a5ab0", icon: "⑂" },
  "question-classifier": { color: "#6f4fa0", icon: "?" },
  iteration: { color: "#2c7f86", icon: "↻" },
  "iteration-start": { color: "#2c7f86", icon: "▹" },
  loop: { color: "#346f9a", icon: "⟳" },
  "loop-start": { color: "#346f9a", icon: "▹" },
  "loop-end": { color: "#346f9a", icon: "⏹" },
  "http-request": { color: "#9a6b1f", icon: "⇄" },
  "template-transform": { color: "#51735a", icon: "T" },
  "variable-aggregator": { color: "#5a6470", icon: "∪" },
  assigner: { color: "#5a6470", icon: "=" },
  "list-operator": { color: "#5a6470", icon: "≡" },
  "parameter-extractor": { color: "#6f4fa0", icon: "⌖" },
  tool: { color: "#7b6a2e", icon: "⚒" },
  agent: { color: "#4a56c9", icon: "◎" },
  "knowledge-retrieval": { color: "#2f6f7d", icon: "⌕" },
};

export function look(type: string): Look {
  return LOOKS[type] ?? { color: "#66707a", icon: type.slice(0, 1).toUpperCase() || "•" };
}

export function handleLabel(node: CwNode, handle: string): string {
  if (handle === "false") return "else";
  if (handle === "fail-branch") return "on error";
  if (handle === "source") return "";
  if (node.type === "if-else") {
    const cases = (node.config.cases as { case_id?: string }[] | undefined) ?? [];
    const index = cases.findIndex((c) => c.case_id === handle);
    if (index >= 0) return index === 0 ? "if" : `elif ${index}`;
  }
  if (node.type === "question-classifier") {
    const classes = (node.config.classes as { id?: string; name?: string }[] | undefined) ?? [];
    const found = classes.find((c) => c.id === handle);
    if (found?.name) return found.name;
  }
  return handle;
}

function fmtTime(s?: number): string {
  if (s === undefined) return "";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

/** The node's metrics line: always one line, so a status change never changes the node's
 * size (a re-measure of every node in React Flow). */
function metricsText(entry?: StatusEntry): string {
  if (!entry || entry.elapsed === undefined) return "\u00a0";
  let text = fmtTime(entry.elapsed);
  if (entry.tokens) text += ` · ${entry.tokens} tok`;
  if (entry.cost) text += ` · $${entry.cost.toFixed(4)}`;
  return text;
}

/* A node is drawn with few elements (a 500-node graph is thousands of them, and every
 * style, layout and paint pass walks them): the icon and the status dot are the head's
 * ::before and ::after, the handles sit in the node without wrappers. The parts that do not
 * depend on the run are memoised on the node, so a status change re-renders the node's
 * class and its metrics line only. */

const Head = memo(function Head({ node }: { node: CwNode }) {
  const { color, icon } = look(node.type);
  return (
    <>
      <div className="cw-head" data-icon={icon} style={{ "--cw-color": color } as CSSProperties}>
        <span className="cw-title">{node.title}</span>
      </div>
      {node.summary ? <div className="cw-summary">{node.summary}</div> : null}
    </>
  );
});

const TargetHandle = memo(function TargetHandle({ node }: { node: CwNode }) {
  if (node.type.endsWith("start") && node.type !== "start") return null;
  return <Handle type="target" id="target" position={Position.Left} />;
});

const SourceHandles = memo(function SourceHandles({ node }: { node: CwNode }) {
  const n = node.handles.length;
  return (
    <>
      {node.handles.map((h, i) => {
        const top = n === 1 ? "50%" : `${((i + 1) * 100) / (n + 1)}%`;
        const label = handleLabel(node, h);
        return (
          <Fragment key={h}>
            {label ? <span className="cw-handle-label" style={{ top }}>{label}</span> : null}
            <Handle
              type="source"
              id={h}
              position={Position.Right}
              className={h === "fail-branch" ? "cw-handle-fail" : undefined}
              style={n === 1 ? undefined : { top }}
            />
          </Fragment>
        );
      })}
    </>
  );
});

const STALE_HINT = "changed since the last run (or follows a node that did): %workflow run NAME --stale runs it again";

/** Show ``entry``'s status on the node's box and its metrics line, in place. The class is
 * checked, not only ``data-status``: a React render that changes the box's class (selection,
 * the stale badge) sets the whole attribute without it. */
function showStatus(box: HTMLElement, metrics: HTMLElement, entry: StatusEntry | undefined): void {
  const status = entry?.status ?? "pending";
  const cls = `cw-status-${status}`;
  if (box.dataset.status !== status || !box.classList.contains(cls)) {
    const old = box.dataset.status;
    if (old && old !== status) box.classList.remove(`cw-status-${old}`);
    box.classList.add(cls);
    box.dataset.status = status;
  }
  const text = metricsText(entry);
  if (metrics.textContent !== text) metrics.textContent = text;
}

/* A run recolours nodes in place: the status class, ``data-status`` and the metrics line are
 * set on the node's elements when the store says the node changed, without a React render
 * (a 500-node run is a thousand of them; each was a render of the node and its allocations,
 * which brought garbage collections of tens of ms into the frames). React renders the node
 * when what it draws changes otherwise: selection, the error badge, the stale badge. It owns
 * ``className`` without the status class, which is put back after each of its renders. */
function NodeView({ id, node, selected, container }: { id: string; node: CwNode; selected: boolean; container: boolean }) {
  const { store } = useEditor();
  const box = useRef<HTMLDivElement>(null);
  const metrics = useRef<HTMLDivElement>(null);
  const [, render] = useReducer((n: number) => n + 1, 0);
  const entry = store.get(id);
  const error = entry?.error;
  const stale = store.isStale(id);
  // What this render drew, for the listener to tell whether React must draw again.
  const drawn = useRef({ error, stale });
  drawn.current = { error, stale };
  useLayoutEffect(() => showStatus(box.current!, metrics.current!, store.get(id)));
  useLayoutEffect(
    () =>
      store.subscribe(id, () => {
        const now = store.get(id);
        showStatus(box.current!, metrics.current!, now);
        if (now?.error !== drawn.current.error || store.isStale(id) !== drawn.current.stale) render();
      }),
    [store, id],
  );
  return (
    <div
      ref={box}
      className={`cw-node${container ? " cw-container" : ""}${stale ? " cw-is-stale" : ""}${selected ? " cw-selected" : ""}`}
      data-testid={`cw-node-${id}`}
      data-stale={stale ? "true" : undefined}
      style={container ? undefined : { height: nodeHeight(node) }}
    >
      <TargetHandle node={node} />
      {stale ? (
        <span className="cw-stale" data-testid={`cw-stale-${id}`} title={STALE_HINT}>
          stale
        </span>
      ) : null}
      <Head node={node} />
      <div className="cw-metrics" ref={metrics} />
      {error ? (
        <div className={`cw-error${selected ? " cw-error-full" : ""}`} data-testid={`cw-error-${node.id}`}
          title={selected ? undefined : `${error}\n(select the node: its panel shows the whole error)`}>
          {error}
        </div>
      ) : null}
      <SourceHandles node={node} />
    </div>
  );
}

export const CwNodeView = memo(function CwNodeView({ id, data, selected }: NodeProps<FlowNode>) {
  return <NodeView id={id} node={data.node} selected={!!selected} container={false} />;
});

export const CwContainerView = memo(function CwContainerView({ id, data, selected }: NodeProps<FlowNode>) {
  return <NodeView id={id} node={data.node} selected={!!selected} container />;
});

/** How an edge looks during a run, from the statuses of its ends: "active" into a running
 * node, "taken" once the target ran, "" otherwise. */
function edgeState(source?: string, target?: string): string {
  if (target === "running" && (source === "succeeded" || source === "cached" || source === undefined)) return "active";
  if (source !== undefined && target !== undefined && target !== "skipped" && target !== "pending") {
    return "taken";
  }
  return "";
}

/** Show the edge's look on its path, in place (like a node's status: no React render). */
function showEdgeState(path: SVGPathElement, state: string): void {
  const old = path.dataset.run ?? "";
  if (old === state) return;
  if (old) path.classList.remove(`cw-edge-${old}`);
  if (state) path.classList.add(`cw-edge-${state}`);
  path.dataset.run = state;
}

/** An edge: its path and a wider invisible one to click (as React Flow's BaseEdge draws
 * them). Its look follows the statuses of its ends, set in place when either changes; React
 * renders the edge when an end moves or it is selected. */
export const CwEdgeView = memo(function CwEdgeView(props: EdgeProps<FlowEdge>) {
  const { store } = useEditor();
  const { source, target, sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition } = props;
  const ref = useRef<SVGPathElement>(null);
  const path = useMemo(
    () => getBezierPath({ sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition })[0],
    [sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition],
  );
  const look = useCallback(
    () => edgeState(store.get(source)?.status, store.get(target)?.status),
    [store, source, target],
  );
  useLayoutEffect(() => {
    // React set the class attribute anew when it changed: the look goes back on.
    if (ref.current!.dataset.run && !ref.current!.classList.contains(`cw-edge-${ref.current!.dataset.run}`)) {
      delete ref.current!.dataset.run;
    }
    showEdgeState(ref.current!, look());
  });
  useLayoutEffect(() => {
    const cb = () => showEdgeState(ref.current!, look());
    const a = store.subscribe(source, cb);
    const b = store.subscribe(target, cb);
    return () => {
      a();
      b();
    };
  }, [store, source, target, look]);
  const fail = props.data?.handle === "fail-branch";
  return (
    <>
      <path
        ref={ref}
        id={props.id}
        d={path}
        fill="none"
        className={`react-flow__edge-path cw-edge${fail ? " cw-edge-fail" : ""}`}
        markerEnd={props.markerEnd}
      />
      <path d={path} fill="none" strokeOpacity={0} strokeWidth={16} className="react-flow__edge-interaction" />
    </>
  );
});

export const nodeTypes = { cw: CwNodeView, cwContainer: CwContainerView };
export const edgeTypes = { cw: CwEdgeView };
