/** The editor: React Flow over the kernel's graph. Interaction state (selection, drags, the
 * viewport) is local; edits go to the kernel as semantic messages and come back as traits. */
import { memo, useCallback, useEffect, useMemo, useRef, useState } from "react";
import type { DragEvent, FocusEvent, KeyboardEvent, MouseEvent } from "react";
import {
  addEdge,
  applyEdgeChanges,
  applyNodeChanges,
  Background,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  useStore,
} from "@xyflow/react";
import type { Connection, EdgeChange, IsValidConnection, NodeChange, OnConnectEnd, OnDelete } from "@xyflow/react";
import { EditorContext, useTrait } from "./context";
import { connectionProblem, DAGRE_LIMIT, freeSpot, HEADER, layout, NODE_WIDTH, PAD, SUPPRESS, toFlowEdges, toFlowNodes } from "./graph";
import type { FlowEdge, FlowNode } from "./graph";
import { edgeTypes, look, nodeTypes } from "./nodes";
import { PropertiesPanel } from "./panel";
import { needsForm, RunForm, RunStatusLine, startVariables } from "./run";
import { StatusStore } from "./status";
import type { AnyModel, CwEdge, CwNode, NodeTypeInfo, Problem, TrustInfo } from "./types";


/** A press inside the editor stays with the editor. JupyterLab's notebook would otherwise
 * move the focus to the cell (and the browser then on to the pressed element): two focus
 * changes around every node and edge, each a style recalculation of the whole editor. The
 * cell still becomes the active one, from the focus landing inside it. */
function keepFocusHere(e: { stopPropagation(): void }) {
  e.stopPropagation();
}

/** A toolbar button pressed with the mouse leaves the focus where it is: moving it costs a
 * style recalculation of everything inside the element losing it (the notebook cell holding
 * the editor, when the cell was selected), for a button that needs no keys. */
function keepFocusWhereItIs(e: MouseEvent<HTMLDivElement>) {
  if ((e.target as HTMLElement).closest("button")) e.preventDefault();
}

function useJupyterDark(): boolean {
  const read = () => typeof document !== "undefined" && document.body.dataset.jpThemeLight === "false";
  const [dark, setDark] = useState(read);
  useEffect(() => {
    const obs = new MutationObserver(() => setDark(read()));
    obs.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
    return () => obs.disconnect();
  }, []);
  return dark;
}

type Clip = { nodes: CwNode[]; edges: CwEdge[] };
let clipboard: Clip | null = null;

const EMPTY: never[] = [];
const FIT = { padding: 0.1, maxZoom: 1.25 };
/** Above this many nodes the minimap shows by default (an overview of a big graph); below,
 * it would only cover nodes. */
const MAP_FROM = 30;
/** Narrower than this, the editor opens with the palette collapsed to its icons. */
const WIDE = 1200;

/** How far out the view is zoomed, in three steps: the nodes of a zoomed-out view draw
 * their titles larger (and drop their detail lines), so they stay readable; a component
 * re-renders only when the step changes. */
function zoomStep(s: { transform: [number, number, number] }): string {
  const zoom = s.transform[2];
  return zoom < 0.38 ? " cw-farther" : zoom < 0.6 ? " cw-far" : "";
}
const PRO = { hideAttribution: true };
const DELETE_KEYS = ["Backspace", "Delete"];

type ToolbarProps = {
  model: AnyModel;
  send: (msg: Record<string, unknown>) => void;
  onRun: (form: boolean) => void;
  hasInputs: boolean;
  onFit: () => void;
  onLayout: () => void;
  message: string;
  onDismiss: () => void;
  nodeCount: number;
  problemCount: number;
  sides: Sides;
  /** Whether the panel shows now (open, with a node selected). */
  panelShown: boolean;
  setSides: (s: Sides) => void;
};

/** Which side columns are open: the palette (else a strip of icons), the properties panel. */
export type Sides = { palette: boolean; panel: boolean; map: boolean };

/** The toolbar reads the run and history flags itself: a run starting or ending re-renders
 * these buttons, not the canvas. */
const Toolbar = memo(function Toolbar(props: ToolbarProps) {
  const { model, send, onRun, hasInputs, onFit, onLayout, message, onDismiss, nodeCount, problemCount, sides, panelShown, setSides } = props;
  // Expand folds whatever takes width from the canvas now; with nothing to fold, it opens both.
  const folded = !sides.palette && !panelShown;
  const running = useTrait<boolean>(model, "running");
  const canUndo = useTrait<boolean>(model, "can_undo");
  const canRedo = useTrait<boolean>(model, "can_redo");
  const trust = useTrait<TrustInfo>(model, "trust");
  return (
    <div className="cw-toolbar" tabIndex={-1} {...SUPPRESS} onMouseDown={keepFocusWhereItIs}>
      <button data-testid="cw-run" disabled={running} onClick={() => onRun(false)}
        title={hasInputs ? "run (asks for the start node's inputs unless they are all set)" : "run the workflow"}>▶ Run</button>
      {hasInputs ? (
        <button data-testid="cw-run-inputs" disabled={running} onClick={() => onRun(true)} title="run with inputs typed in a form">
          Inputs…
        </button>
      ) : null}
      <button data-testid="cw-stop" disabled={!running} onClick={() => send({ type: "stop" })}>■ Stop</button>
      <span className="cw-sep" />
      <button data-testid="cw-undo" disabled={!canUndo} title="undo (Ctrl+Z)" onClick={() => send({ type: "undo" })}>↶</button>
      <button data-testid="cw-redo" disabled={!canRedo} title="redo (Ctrl+Shift+Z)" onClick={() => send({ type: "redo" })}>↷</button>
      <span className="cw-sep" />
      <button data-testid="cw-fit" onClick={onFit}>Fit</button>
      <button data-testid="cw-layout" onClick={onLayout}>Layout</button>
      <span className="cw-sep" />
      <button data-testid="cw-toggle-map" aria-pressed={sides.map} title="show or hide the minimap"
        onClick={() => setSides({ ...sides, map: !sides.map })}>Map</button>
      <button data-testid="cw-expand" title="the canvas gets the whole width (palette and panel collapse), or back"
        onClick={() => {
          setSides({ ...sides, palette: folded, panel: folded });
        }}>{folded ? "⤡ Sides" : "⤢ Expand"}</button>
      <span className="cw-message" data-testid="cw-message" title={message}>
        {message ? (
          <>
            <span className="cw-message-icon">⚠</span> {message}{" "}
            <button className="cw-dismiss" data-testid="cw-message-dismiss" title="dismiss" onClick={onDismiss}>×</button>
          </>
        ) : null}
      </span>
      <RunStatusLine model={model} />
      <TrustBadge trust={trust} />
      <span className="cw-counts">
        {nodeCount} nodes · {problemCount} problems
      </span>
    </div>
  );
});

/** Says whether the workflow's code runs in the kernel (trusted) or in the sandbox (read from
 * a file the user has not trusted); the tooltip says how to trust it. */
export function TrustBadge({ trust }: { trust: TrustInfo | undefined }) {
  if (!trust || (trust.trusted && trust.code_nodes.length === 0)) return null;
  const label = trust.trusted
    ? "trusted: code runs in the kernel"
    : trust.code_nodes.length > 0
      ? `untrusted: ${trust.code_nodes.length} code node${trust.code_nodes.length === 1 ? "" : "s"} sandboxed`
      : "untrusted file";
  return (
    <span className={trust.trusted ? "cw-trust" : "cw-trust cw-untrusted"} data-testid="cw-trust" title={trust.text}>
      {label}
    </span>
  );
}

function Editor({ model, store }: { model: AnyModel; store: StatusStore }) {
  const nodes = useTrait<CwNode[]>(model, "nodes") ?? EMPTY;
  const edges = useTrait<CwEdge[]>(model, "edges") ?? EMPTY;
  const problems = useTrait<Problem[]>(model, "problems") ?? EMPTY;
  const types = useTrait<NodeTypeInfo[]>(model, "node_types") ?? EMPTY;
  const height = useTrait<number>(model, "height") ?? 560;
  const dark = useJupyterDark();
  const flow = useReactFlow<FlowNode, FlowEdge>();
  const rootRef = useRef<HTMLDivElement>(null);
  const [message, setMessage] = useState("");
  const [epoch, setEpoch] = useState(0);
  const [selectedId, setSelectedId] = useState<string | null>(null);
  const [sides, setSides] = useState<Sides>(() => ({ palette: true, panel: true, map: nodes.length > MAP_FROM }));
  const far = useStore(zoomStep);
  // The palette starts as icons where the width is short (read once the editor is in the page).
  useEffect(() => {
    const width = rootRef.current?.getBoundingClientRect().width ?? WIDE;
    if (width > 0 && width < WIDE) setSides((s) => ({ ...s, palette: false }));
  }, []);
  const [runForm, setRunForm] = useState(false);
  /** What the form ran with last: the next form starts from it. */
  const [lastInputs, setLastInputs] = useState<Record<string, unknown>>({});
  const given = useTrait<Record<string, unknown>>(model, "inputs");
  // The first render draws the graph at once (no empty pass before the hydrating effect).
  const [rfNodes, setRfNodes] = useState<FlowNode[]>(() => toFlowNodes(nodes, edges, new Set()));
  const [rfEdges, setRfEdges] = useState<FlowEdge[]>(() => toFlowEdges(edges, new Set()));
  const hydrated = useRef<unknown[]>([nodes, edges, 0]);
  // The minimap draws every node a second time: it comes after the first paint.
  const [showMap, setShowMap] = useState(false);
  useEffect(() => {
    const id = requestAnimationFrame(() => setTimeout(() => setShowMap(true), 0));
    return () => cancelAnimationFrame(id);
  }, []);
  const send = useCallback((msg: Record<string, unknown>) => model.send(msg), [model]);

  useEffect(() => {
    const onMsg = (msg: any) => {
      if (!msg || typeof msg !== "object") return;
      if (msg.type === "status") {
        // The kernel sends the patches of one event-loop tick together.
        for (const patch of msg.patches ?? [msg.patch ?? {}]) store.patch(patch);
      }
      else if (msg.type === "status_reset") store.reset({});
      else if (msg.type === "status_snapshot") store.reset(msg.status ?? {});
      else if (msg.type === "refused") {
        setMessage(msg.reason ?? "refused");
        setEpoch((e) => e + 1); // undo the optimistic local change
      } else if (msg.type === "created" && msg.id) setSelectedId(msg.id);
    };
    const onStatus = () => store.reset(model.get("status") ?? {});
    // One listener for the editor, not one per node: the store flips only the nodes whose
    // badge changes, at frames.
    const onStale = () => store.setStale(model.get("stale") ?? []);
    model.on("msg:custom", onMsg);
    model.on("change:status", onStatus);
    model.on("change:stale", onStale);
    store.reset(model.get("status") ?? {});
    onStale();
    model.send({ type: "hello" });
    return () => {
      model.off("msg:custom", onMsg);
      model.off("change:status", onStatus);
      model.off("change:stale", onStale);
    };
  }, [model, store]);

  // Hydrate React Flow from the traits, keeping what is local: selection and measured sizes.
  useEffect(() => {
    const [n0, e0, epoch0] = hydrated.current;
    if (n0 === nodes && e0 === edges && epoch0 === epoch) return;
    hydrated.current = [nodes, edges, epoch];
    setRfNodes((prev) => {
      const old = new Map(prev.map((n) => [n.id, n]));
      const selected = new Set(prev.filter((n) => n.selected).map((n) => n.id));
      return toFlowNodes(nodes, edges, selected).map((n) => {
        const measured = old.get(n.id)?.measured;
        return measured ? { ...n, measured } : n;
      });
    });
    setRfEdges((prev) => toFlowEdges(edges, new Set(prev.filter((e) => e.selected).map((e) => e.id))));
  }, [nodes, edges, epoch]);

  const onNodesChange = useCallback((changes: NodeChange<FlowNode>[]) => {
    setRfNodes((ns) => applyNodeChanges(changes, ns));
  }, []);
  const onEdgesChange = useCallback((changes: EdgeChange<FlowEdge>[]) => {
    setRfEdges((es) => applyEdgeChanges(changes, es));
  }, []);

  const isValidConnection: IsValidConnection<FlowEdge> = useCallback(
    (c) => connectionProblem(c, nodes, edges) === null,
    [nodes, edges],
  );

  const onConnect = useCallback(
    (c: Connection) => {
      const problem = connectionProblem(c, nodes, edges);
      if (problem) {
        setMessage(problem);
        return;
      }
      const handle = c.sourceHandle || "source";
      setMessage("");
      setRfEdges((es) =>
        addEdge({ ...c, id: `${c.source}:${handle}->${c.target}`, type: "cw", data: { handle }, domAttributes: SUPPRESS }, es),
      );
      send({ type: "connect", source: c.source, target: c.target, source_handle: handle });
    },
    [nodes, edges, send],
  );

  /** A connection dropped where React Flow refuses it says why; one dropped on a node's
   * body (not on its handle) connects to that node's input. */
  const onConnectEnd: OnConnectEnd = useCallback(
    (event, state) => {
      if (state.isValid || !state.fromNode || !state.fromHandle) return;
      const over = (event.target as Element | null)?.closest?.(".react-flow__node") as HTMLElement | null;
      const other = state.toNode?.id ?? over?.dataset.id;
      if (!other || other === state.fromNode.id && !state.toNode) return;
      const fromSource = state.fromHandle.type === "source";
      const conn = fromSource
        ? { source: state.fromNode.id, target: other, sourceHandle: state.fromHandle.id ?? "source" }
        : { source: other, target: state.fromNode.id, sourceHandle: state.toHandle?.id ?? "source" };
      const problem = connectionProblem(conn, nodes, edges)
        ?? (state.toHandle && state.toHandle.type === state.fromHandle.type
          ? `connect an output (right side) to an input (left side), not two ${state.fromHandle.type === "source" ? "outputs" : "inputs"}`
          : null);
      if (problem) setMessage(`cannot connect: ${problem}`);
      else if (!state.toHandle && fromSource) onConnect({ ...conn, targetHandle: "target" });
    },
    [nodes, edges, onConnect],
  );

  const onDelete: OnDelete<FlowNode, FlowEdge> = useCallback(
    ({ nodes: gone, edges: cut }) => {
      const ids = new Set(gone.map((n) => n.id));
      send({
        type: "delete",
        nodes: gone.map((n) => n.id),
        edges: cut
          .filter((e) => !ids.has(e.source) && !ids.has(e.target))
          .map((e) => ({ source: e.source, target: e.target, source_handle: e.sourceHandle ?? "source" })),
      });
      if (selectedId && ids.has(selectedId)) setSelectedId(null);
    },
    [send, selectedId],
  );

  const onNodeDragStop = useCallback(
    (_e: unknown, _node: FlowNode, dragged: FlowNode[]) => {
      const positions: Record<string, { x: number; y: number }> = {};
      for (const n of dragged) positions[n.id] = { x: Math.round(n.position.x), y: Math.round(n.position.y) };
      send({ type: "move", positions });
    },
    [send],
  );

  const addNode = useCallback(
    (type: string, at?: { x: number; y: number }) => {
      const container = selectedId ? nodes.find((n) => n.id === selectedId && n.container) : undefined;
      const parent = container?.id;
      // The nodes at the level the new one joins, as drawn: it goes to the free place
      // nearest the point (the drop, the middle of the view, or a container's corner).
      const boxes = rfNodes
        .filter((n) => n.parentId === parent)
        .map((n) => ({ x: n.position.x, y: n.position.y, w: n.width ?? NODE_WIDTH, h: n.height ?? 76 }));
      const size = { w: NODE_WIDTH, h: 76 };
      let center = at;
      if (container) center = { x: PAD + size.w / 2, y: HEADER + PAD + size.h / 2 };
      else if (!center) {
        const rect = rootRef.current?.querySelector(".react-flow")?.getBoundingClientRect();
        center = flow.screenToFlowPosition(rect ? { x: rect.left + rect.width / 2, y: rect.top + rect.height / 2 } : { x: 0, y: 0 });
      }
      const position = freeSpot(center, size, boxes);
      send({
        type: "add_node",
        node_type: type,
        parent: container?.id ?? null,
        position: { x: Math.round(position.x), y: Math.round(position.y) },
      });
    },
    [selectedId, nodes, rfNodes, send, flow],
  );

  const relayout = useCallback(() => {
    const boxes = layout(nodes.map((n) => ({ ...n, position: null })), edges);
    const positions: Record<string, { x: number; y: number }> = {};
    boxes.forEach((b, id) => (positions[id] = { x: Math.round(b.x), y: Math.round(b.y) }));
    send({ type: "move", positions });
    setTimeout(() => flow.fitView(FIT), 50);
  }, [nodes, edges, send, flow]);
  // The view follows the canvas's size (a side column opening or closing, the window) until
  // the user pans or zooms; Fit hands it back.
  const autoFit = useRef(true);
  const fit = useCallback(() => {
    autoFit.current = true;
    flow.fitView(FIT);
  }, [flow]);
  const onMoveStart = useCallback((e: unknown) => {
    if (e) autoFit.current = false;
  }, []);
  const canvasRef = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = canvasRef.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    let last = "";
    let frame = 0;
    const obs = new ResizeObserver(([entry]) => {
      const size = `${Math.round(entry.contentRect.width)}x${Math.round(entry.contentRect.height)}`;
      if (size === last) return;
      const first = last === "";
      last = size;
      if (first || !autoFit.current) return;
      cancelAnimationFrame(frame);
      frame = requestAnimationFrame(() => flow.fitView(FIT));
    });
    obs.observe(el);
    return () => {
      obs.disconnect();
      cancelAnimationFrame(frame);
    };
  }, [flow]);

  const vars = useMemo(() => startVariables(nodes), [nodes]);
  const onRun = useCallback(
    (form: boolean) => {
      if (form || needsForm(vars, given)) setRunForm(true);
      else send({ type: "run" });
    },
    [vars, given, send],
  );
  const runWith = useCallback(
    (inputs: Record<string, unknown>) => {
      setLastInputs(inputs);
      setRunForm(false);
      send({ type: "run", inputs });
    },
    [send],
  );
  const onSelectionChange = useCallback(({ nodes: sel }: { nodes: FlowNode[] }) => {
    const id = sel.length === 1 ? sel[0].id : null;
    setSelectedId(id);
    if (id) setRunForm(false);
  }, []);
  // Keys pressed after a click on the canvas go to the editor through a small focus target:
  // JupyterLab's `:focus ::selection` style rules make every focus change restyle the whole
  // subtree of the element gaining or losing focus, which for the editor's root would be
  // every node and edge of the graph.
  const focusRef = useRef<HTMLDivElement>(null);
  const onPaneClick = useCallback(() => focusRef.current?.focus({ preventScroll: true }), []);
  // A focused button that gets disabled (Run once the run starts, Stop once it ends) loses
  // the focus to the page's body; JupyterLab then moves it to the notebook on the next press
  // anywhere in it, restyling the whole notebook. The focus stays in the editor instead.
  const keepFocusInside = useCallback((e: FocusEvent<HTMLDivElement>) => {
    if (e.relatedTarget === null && (e.target as { disabled?: boolean }).disabled) {
      focusRef.current?.focus({ preventScroll: true });
    }
  }, []);

  const onKeyDown = useCallback(
    (e: KeyboardEvent<HTMLDivElement>) => {
      const target = e.target as HTMLElement;
      if (["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) || target.isContentEditable) return;
      const mod = e.ctrlKey || e.metaKey;
      if (!mod) return;
      const key = e.key.toLowerCase();
      if (key === "z" && !e.shiftKey) send({ type: "undo" });
      else if ((key === "z" && e.shiftKey) || key === "y") send({ type: "redo" });
      else if (key === "c") {
        const ids = new Set(rfNodes.filter((n) => n.selected).map((n) => n.id));
        if (!ids.size) return;
        clipboard = {
          nodes: nodes.filter((n) => ids.has(n.id)),
          edges: edges.filter((x) => ids.has(x.source) && ids.has(x.target)),
        };
      } else if (key === "v" && clipboard) send({ type: "paste", ...clipboard });
      else return;
      e.preventDefault();
    },
    [send, rfNodes, nodes, edges],
  );

  const onDrop = useCallback(
    (e: DragEvent<HTMLDivElement>) => {
      const type = e.dataTransfer.getData("application/x-cellwire-type");
      if (!type) return;
      e.preventDefault();
      addNode(type, flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }));
    },
    [addNode, flow],
  );

  const dismiss = useCallback(() => setMessage(""), []);
  const selected = selectedId ? nodes.find((n) => n.id === selectedId) : undefined;
  const schema = selected ? types.find((t) => t.name === selected.type)?.schema : undefined;
  const editor = useMemo(() => ({ store, send, model }), [store, send, model]);
  const problemCount = useMemo(() => problems.filter((p) => p.level === "error").length, [problems]);

  return (
    <EditorContext.Provider value={editor}>
      <div
        ref={rootRef}
        className={`cw-editor${dark ? " cw-dark" : ""}${nodes.length > DAGRE_LIMIT ? " cw-big" : far}`}
        data-testid="cw-editor"
        {...SUPPRESS}
        onKeyDown={onKeyDown}
        onMouseDown={keepFocusHere}
        onBlur={keepFocusInside}
        style={{ height }}
      >
        <div ref={focusRef} className="cw-focus" tabIndex={-1} data-testid="cw-focus" {...SUPPRESS} />
        <Toolbar
          model={model}
          send={send}
          onRun={onRun}
          hasInputs={vars.length > 0}
          onFit={fit}
          onLayout={relayout}
          message={message}
          onDismiss={dismiss}
          nodeCount={nodes.length}
          problemCount={problemCount}
          sides={sides}
          panelShown={!!selected && sides.panel}
          setSides={setSides}
        />
        <div className="cw-body">
          <Palette types={types} open={sides.palette} onToggle={() => setSides({ ...sides, palette: !sides.palette })} onAdd={addNode} />
          <div className="cw-canvas" ref={canvasRef} data-testid="cw-canvas" onDragOver={(e) => e.preventDefault()} onDrop={onDrop}>
            <ReactFlow<FlowNode, FlowEdge>
              nodes={rfNodes}
              edges={rfEdges}
              nodeTypes={nodeTypes}
              edgeTypes={edgeTypes}
              onNodesChange={onNodesChange}
              onEdgesChange={onEdgesChange}
              onConnect={onConnect}
              onConnectEnd={onConnectEnd}
              onMoveStart={onMoveStart}
              isValidConnection={isValidConnection}
              onDelete={onDelete}
              onNodeDragStop={onNodeDragStop}
              onSelectionChange={onSelectionChange}
              onPaneClick={onPaneClick}
              deleteKeyCode={DELETE_KEYS}
              // Dragging a connection near the canvas edge would pan the graph, and the node
              // being aimed at with it: the user drops on what they see.
              autoPanOnConnect={false}
              colorMode={dark ? "dark" : "light"}
              fitView
              fitViewOptions={FIT}
              minZoom={0.05}
              proOptions={PRO}
            >
              <Background gap={20} size={1} />
              <Controls showInteractive={false} />
              {showMap && sides.map ? <MiniMap pannable={false} zoomable={false} ariaLabel="overview" /> : null}
            </ReactFlow>
          </div>
          {runForm ? (
            <RunForm vars={vars} given={{ ...given, ...lastInputs }} onRun={runWith} onClose={() => setRunForm(false)} />
          ) : selected && sides.panel ? (
            <PropertiesPanel
              node={selected}
              schema={schema}
              problems={problems.filter((p) => p.node_id === selected.id)}
              send={send}
              onCollapse={() => setSides({ ...sides, panel: false })}
            />
          ) : selected ? (
            <button
              className="cw-strip"
              data-testid="cw-panel-strip"
              title="show the properties panel"
              onClick={() => setSides({ ...sides, panel: true })}
            >
              ‹ properties
            </button>
          ) : null}
        </div>
      </div>
    </EditorContext.Provider>
  );
}

type PaletteProps = {
  types: NodeTypeInfo[];
  open: boolean;
  onToggle: () => void;
  onAdd: (type: string) => void;
};

/** The node types, to click (added at a free place in the middle of the view) or drag onto
 * the canvas. Collapsed, it is a strip of icons. Types that cannot run in this install come
 * last, marked, with what they need as their tooltip. */
const Palette = memo(function Palette({ types, open, onToggle, onAdd }: PaletteProps) {
  const runnable = types.filter((t) => !t.needs);
  const blocked = types.filter((t) => t.needs);
  const item = (t: NodeTypeInfo) => (
    <button
      key={t.name}
      className={`cw-palette-item${t.needs ? " cw-cannot-run" : ""}`}
      data-testid={`cw-palette-${t.name}`}
      data-runs={t.needs ? "false" : "true"}
      title={t.needs ? `${t.name}: ${t.needs}` : `${t.name}: ${t.description}`}
      draggable
      onDragStart={(e) => e.dataTransfer.setData("application/x-cellwire-type", t.name)}
      onClick={() => onAdd(t.name)}
    >
      <span className="cw-icon" style={{ background: look(t.name).color }}>{look(t.name).icon}</span>
      {open ? <span className="cw-palette-name">{t.name}</span> : null}
      {open && t.needs ? <span className="cw-cannot-run-tag">can't run here</span> : null}
    </button>
  );
  return (
    <div className={`cw-palette${open ? "" : " cw-palette-closed"}`} data-testid="cw-palette" tabIndex={-1} {...SUPPRESS}>
      <button className="cw-palette-toggle" data-testid="cw-palette-toggle" title={open ? "collapse the palette" : "expand the palette"} onClick={onToggle}>
        {open ? "‹ nodes" : "›"}
      </button>
      {runnable.map(item)}
      {blocked.length ? (
        <div className="cw-palette-group" title="kept from Dify workflows; a run fails at these nodes, saying what they need">
          {open ? "cannot run here" : "—"}
        </div>
      ) : null}
      {blocked.map(item)}
    </div>
  );
});

export function App({ model }: { model: AnyModel }) {
  // The statuses and stale badges known now are there for the first render (a view opened
  // after a run).
  const store = useMemo(() => new StatusStore(model.get("status") ?? {}, model.get("stale") ?? []), [model]);
  return (
    <ReactFlowProvider>
      <Editor model={model} store={store} />
    </ReactFlowProvider>
  );
}
