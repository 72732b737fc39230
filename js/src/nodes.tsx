/** How nodes and edges are drawn: by type (colour, icon), with one source handle per branch
 * and the run status of the node. */
import { Fragment, memo, useCallback, useMemo, useSyncExternalStore } from "react";
import type { CSSProperties } from "react";
import { BaseEdge, getBezierPath, Handle, Position } from "@xyflow/react";
import type { EdgeProps, NodeProps } from "@xyflow/react";
import { useEditor } from "./context";
import { nodeHeight } from "./graph";
import type { FlowEdge, FlowNode } from "./graph";
import { useStale, useStatus } from "./status";
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

function Metrics({ entry }: { entry?: StatusEntry }) {
  // Always one line, so a status change never changes the node's size (a re-measure of
  // every node in React Flow).
  if (!entry || entry.elapsed === undefined) return <div className="cw-metrics">&nbsp;</div>;
  const parts = [fmtTime(entry.elapsed)];
  if (entry.tokens) parts.push(`${entry.tokens} tok`);
  if (entry.cost) parts.push(`$${entry.cost.toFixed(4)}`);
  return <div className="cw-metrics">{parts.join(" · ")}</div>;
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

function NodeView({ id, node, selected, container }: { id: string; node: CwNode; selected: boolean; container: boolean }) {
  const { store } = useEditor();
  const entry = useStatus(store, id);
  const stale = useStale(store, id);
  const status = entry?.status ?? "pending";
  return (
    <div
      className={`cw-node${container ? " cw-container" : ""} cw-status-${status}${stale ? " cw-is-stale" : ""}${selected ? " cw-selected" : ""}`}
      data-testid={`cw-node-${id}`}
      data-status={status}
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
      <Metrics entry={entry} />
      {entry?.error ? (
        <div className={`cw-error${selected ? " cw-error-full" : ""}`} data-testid={`cw-error-${node.id}`}
          title={selected ? undefined : `${entry.error}\n(select the node: its panel shows the whole error)`}>
          {entry.error}
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

/** The edge subscribes to its look, not to its ends' entries: most status changes (a source
 * finishing while its target waits, new timings) leave the look as it is and re-render
 * nothing. */
function useEdgeState(source: string, target: string): string {
  const { store } = useEditor();
  const subscribe = useCallback(
    (cb: () => void) => {
      const a = store.subscribe(source, cb);
      const b = store.subscribe(target, cb);
      return () => {
        a();
        b();
      };
    },
    [store, source, target],
  );
  return useSyncExternalStore(subscribe, () => edgeState(store.get(source)?.status, store.get(target)?.status));
}

export const CwEdgeView = memo(function CwEdgeView(props: EdgeProps<FlowEdge>) {
  const state = useEdgeState(props.source, props.target);
  // A run re-renders each edge twice (active, then taken) with its ends where they were: the
  // path (a string built from a dozen numbers) is kept until an end moves.
  const { sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition } = props;
  const path = useMemo(
    () => getBezierPath({ sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition })[0],
    [sourceX, sourceY, sourcePosition, targetX, targetY, targetPosition],
  );
  const fail = props.data?.handle === "fail-branch";
  const cls = `cw-edge${state ? ` cw-edge-${state}` : ""}${fail ? " cw-edge-fail" : ""}`;
  return <BaseEdge id={props.id} path={path} className={cls} markerEnd={props.markerEnd} interactionWidth={16} />;
});

export const nodeTypes = { cw: CwNodeView, cwContainer: CwContainerView };
export const edgeTypes = { cw: CwEdgeView };
