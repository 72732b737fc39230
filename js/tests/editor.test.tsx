import { afterEach, describe, expect, test, vi } from "vitest";
import { userEvent } from "vitest/browser";
import widget from "../src/widget";
import { connectionProblem, freeSpot } from "../src/graph";
import { formInputs, summaryText } from "../src/run";
import { NODES_PER_UPDATE, StatusStore } from "../src/status";
import type { CwEdge, CwNode, StatusEntry } from "../src/types";

/** anywidget's narrow model API, with pySet standing in for the kernel. */
function fakeModel(state: Record<string, unknown>) {
  const handlers = new Map<string, Set<(...a: any[]) => void>>();
  const sent: any[] = [];
  return {
    sent,
    get: (k: string) => state[k],
    set: (k: string, v: unknown) => (state[k] = v),
    save_changes: () => {},
    on: (e: string, cb: (...a: any[]) => void) => {
      if (!handlers.has(e)) handlers.set(e, new Set());
      handlers.get(e)!.add(cb);
    },
    off: (e?: string | null, cb?: ((...a: any[]) => void) | null) => {
      if (e && cb) handlers.get(e)?.delete(cb);
    },
    send: (msg: unknown) => sent.push(msg),
    pySet(k: string, v: unknown) {
      state[k] = v;
      handlers.get(`change:${k}`)?.forEach((cb) => cb());
    },
    pySend(msg: unknown) {
      handlers.get("msg:custom")?.forEach((cb) => cb(msg, []));
    },
  };
}

const node = (id: string, type: string, extra: Partial<CwNode> = {}): CwNode => ({
  id, type, title: id.toUpperCase(), parent: null, position: null, config: {},
  error_strategy: "fail", handles: ["source"], container: false, summary: "", ...extra,
});
const edge = (source: string, target: string, source_handle = "source"): CwEdge => ({
  id: `${source}:${source_handle}->${target}`, source, target, source_handle,
});

const llmSchema = {
  type: "object",
  $defs: { PromptMessage: { type: "object", properties: { role: { type: "string", default: "user" }, text: { type: "string", default: "" } } } },
  properties: {
    prompt_template: { anyOf: [{ type: "array", items: { $ref: "#/$defs/PromptMessage" } }, { type: "null" }] },
  },
};

function graph() {
  return {
    nodes: [
      node("start", "start"),
      node("ask", "llm", { config: { prompt_template: [{ role: "user", text: "hi" }] } }),
      node("branch", "if-else", { handles: ["case1", "false"], config: { cases: [{ case_id: "case1" }] } }),
      node("end", "end"),
    ],
    edges: [edge("start", "ask"), edge("ask", "branch"), edge("branch", "end", "case1")],
    status: {},
    problems: [],
    node_types: [
      { name: "llm", description: "", container: false, start: false, schema: llmSchema },
      { name: "code", description: "", container: false, start: false, schema: { type: "object" } },
    ],
    running: false,
    can_undo: false,
    can_redo: false,
    height: 500,
  };
}

let cleanup: (() => void) | undefined;
afterEach(() => {
  cleanup?.();
  document.body.innerHTML = "";
});

async function mount(state = graph()) {
  const el = document.createElement("div");
  el.style.width = "1000px";
  document.body.appendChild(el);
  const model = fakeModel(state);
  cleanup = (await (widget as any).render({ model, el })) as () => void;
  await vi.waitFor(() => expect(el.querySelector('[data-testid="cw-node-end"]')).not.toBeNull());
  return { el, model };
}

const q = (el: HTMLElement, id: string) => el.querySelector(`[data-testid="${id}"]`) as HTMLElement | null;

describe("editor", () => {
  test("renders nodes by type with their titles, status and branch handles", async () => {
    const { el, model } = await mount();
    expect(q(el, "cw-editor")).not.toBeNull();
    for (const id of ["start", "ask", "branch", "end"]) {
      const n = q(el, `cw-node-${id}`)!;
      expect(n.dataset.status).toBe("pending");
      expect(n.textContent).toContain(id.toUpperCase());
    }
    const handles = [...el.querySelectorAll('.react-flow__handle.source[data-nodeid="branch"]')]
      .map((h) => h.getAttribute("data-handleid"));
    expect(handles).toEqual(["case1", "false"]);
    expect(q(el, "cw-node-branch")!.textContent).toContain("else");
    await vi.waitFor(() => expect(el.querySelectorAll(".react-flow__edge").length).toBe(3));
    // Focusable nodes and edges carry the attribute that keeps JupyterLab's shortcuts out.
    expect(el.querySelector('.react-flow__node[data-id="ask"]')!.getAttribute("data-lm-suppress-shortcuts")).toBe("true");
    expect(el.querySelector(".react-flow__edge")!.getAttribute("data-lm-suppress-shortcuts")).toBe("true");
    expect(model.sent).toContainEqual({ type: "hello" });
  });

  test("a connection is checked before it is sent: cycles, duplicates and borders refused", () => {
    const g = graph();
    expect(connectionProblem({ source: "end", target: "start", sourceHandle: "source" }, g.nodes, g.edges)).toMatch(/cycle/);
    expect(connectionProblem({ source: "start", target: "ask", sourceHandle: "source" }, g.nodes, g.edges)).toMatch(/already/);
    expect(connectionProblem({ source: "ask", target: "ask", sourceHandle: "source" }, g.nodes, g.edges)).toMatch(/itself/);
    expect(connectionProblem({ source: "branch", target: "end", sourceHandle: "nope" }, g.nodes, g.edges)).toMatch(/no handle/);
    const inner = [...g.nodes, node("inside", "code", { parent: "loop1" }), node("loop1", "loop", { container: true })];
    expect(connectionProblem({ source: "start", target: "inside", sourceHandle: "source" }, inner, g.edges)).toMatch(/container/);
    expect(connectionProblem({ source: "branch", target: "end", sourceHandle: "false" }, g.nodes, g.edges)).toBeNull();
  });

  test("the toolbar says when a file's code is sandboxed, and follows the kernel's trust", async () => {
    const { el, model } = await mount();
    expect(q(el, "cw-trust")).toBeNull(); // built in the notebook, no code: nothing to say
    const text = "flow.yml: not trusted; its 1 code node (c) run in the sandbox; ... cellwire trust flow.yml";
    model.pySet("trust", { trusted: false, origin: "flow.yml", code_nodes: ["c"], text });
    await vi.waitFor(() => expect(q(el, "cw-trust")?.textContent).toBe("untrusted: 1 code node sandboxed"));
    expect(q(el, "cw-trust")?.title).toBe(text);
    model.pySet("trust", { trusted: true, origin: "flow.yml", code_nodes: ["c"], text: "trusted" });
    await vi.waitFor(() => expect(q(el, "cw-trust")?.textContent).toBe("trusted: code runs in the kernel"));
  });

  test("nodes the kernel says are stale wear a stale badge, which goes once they ran", async () => {
    const { el, model } = await mount();
    expect(el.querySelector(".cw-stale")).toBeNull();
    model.pySet("stale", ["branch", "end"]);
    await vi.waitFor(() => expect(q(el, "cw-stale-branch")).not.toBeNull());
    expect(q(el, "cw-stale-end")?.textContent).toBe("stale");
    expect(q(el, "cw-stale-end")?.title).toMatch(/--stale/);
    expect(q(el, "cw-node-branch")!.dataset.stale).toBe("true");
    expect(q(el, "cw-stale-ask")).toBeNull();
    expect(q(el, "cw-node-ask")!.dataset.stale).toBeUndefined();
    model.pySet("stale", []);
    await vi.waitFor(() => expect(el.querySelector(".cw-stale")).toBeNull());
  });

  test("a click on an edge selects it and Backspace deletes it in the kernel", async () => {
    const { el, model } = await mount();
    await vi.waitFor(() => expect(el.querySelectorAll(".react-flow__edge").length).toBe(3));
    const wrapper = [...el.querySelectorAll(".react-flow__edge")].find((e) => e.getAttribute("data-id")!.startsWith("start:"))!;
    // On the wide invisible path drawn for clicks (the visible one is a straight line here,
    // which Playwright will not click: it has no height).
    wrapper.querySelector(".react-flow__edge-interaction")!.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    await vi.waitFor(() => expect(wrapper.classList.contains("selected")).toBe(true));
    await userEvent.keyboard("{Backspace}");
    await vi.waitFor(() => expect(model.sent.find((m) => m.type === "delete")).toBeDefined());
    const msg = model.sent.find((m) => m.type === "delete");
    expect(msg.nodes).toEqual([]);
    expect(msg.edges).toEqual([{ source: "start", target: "ask", source_handle: "source" }]);
  });

  test("Backspace on a selected node sends one delete message", async () => {
    const { el, model } = await mount();
    (el.querySelector('.react-flow__node[data-id="ask"]') as HTMLElement).click();
    await userEvent.keyboard("{Backspace}");
    await vi.waitFor(() => expect(model.sent.find((m) => m.type === "delete")).toBeDefined());
    const msg = model.sent.find((m) => m.type === "delete");
    expect(msg.nodes).toEqual(["ask"]);
    expect(msg.edges).toEqual([]);
  });

  test("status patches recolour nodes and show the error badge", async () => {
    const { el, model } = await mount();
    model.pySend({ type: "status", patch: { ask: { status: "running" } } });
    await vi.waitFor(() => expect(q(el, "cw-node-ask")!.dataset.status).toBe("running"));
    await vi.waitFor(() => expect(el.querySelector(".cw-edge-active")).not.toBeNull());
    // The edge into the running node moves; the one out of it is not drawn as taken yet.
    expect(el.querySelectorAll(".cw-edge-active").length).toBe(1);
    expect(el.querySelector(".cw-edge-taken")).toBeNull();
    model.pySend({ type: "status", patch: { ask: { status: "failed", error: "model said no", elapsed: 0.5 } } });
    await vi.waitFor(() => expect(q(el, "cw-node-ask")!.dataset.status).toBe("failed"));
    expect(q(el, "cw-error-ask")!.textContent).toBe("model said no");
    expect(q(el, "cw-node-start")!.dataset.status).toBe("pending");
    model.pySend({ type: "status_reset" });
    await vi.waitFor(() => expect(q(el, "cw-node-ask")!.dataset.status).toBe("pending"));
    expect(q(el, "cw-error-ask")).toBeNull();
  });

  test("patches sent together apply as one; a node that starts again loses its old error", async () => {
    const { el, model } = await mount();
    model.pySend({ type: "status", patches: [{ ask: { status: "running" } }, { ask: { status: "failed", error: "boom" } }] });
    await vi.waitFor(() => expect(q(el, "cw-error-ask")?.textContent).toBe("boom"));
    model.pySend({ type: "status", patches: [{ ask: { status: "running" } }, { ask: { status: "succeeded", elapsed: 1.5 } }] });
    await vi.waitFor(() => expect(q(el, "cw-node-ask")!.dataset.status).toBe("succeeded"));
    expect(q(el, "cw-error-ask")).toBeNull();
    expect(q(el, "cw-node-ask")!.textContent).toContain("1.50 s");
  });

  test("a node keeps its status colour when it is selected or its stale badge goes", async () => {
    const { el, model } = await mount();
    model.pySet("stale", ["ask"]);
    model.pySend({ type: "status", patch: { ask: { status: "succeeded", elapsed: 0.25 } } });
    await vi.waitFor(() => expect(q(el, "cw-stale-ask")).not.toBeNull());
    await vi.waitFor(() => expect(q(el, "cw-node-ask")!.classList.contains("cw-status-succeeded")).toBe(true));
    (el.querySelector('.react-flow__node[data-id="ask"]') as HTMLElement).click();
    await vi.waitFor(() => expect(q(el, "cw-node-ask")!.classList.contains("cw-selected")).toBe(true));
    expect(q(el, "cw-node-ask")!.classList.contains("cw-status-succeeded")).toBe(true);
    model.pySet("stale", []);
    await vi.waitFor(() => expect(q(el, "cw-stale-ask")).toBeNull());
    expect(q(el, "cw-node-ask")!.classList.contains("cw-status-succeeded")).toBe(true);
    expect(q(el, "cw-node-ask")!.dataset.status).toBe("succeeded");
  });

  test("a status patch changes only the nodes it names", async () => {
    const { el, model } = await mount();
    await vi.waitFor(() => expect(el.querySelectorAll(".react-flow__edge").length).toBe(3));
    const others = [...el.querySelectorAll('.react-flow__node:not([data-id="ask"])')];
    const changed: Node[] = [];
    const obs = new MutationObserver((records) => records.forEach((r) => changed.push(r.target)));
    for (const n of others) obs.observe(n, { subtree: true, attributes: true, childList: true, characterData: true });
    model.pySend({ type: "status", patches: [{ ask: { status: "succeeded", elapsed: 0.25 } }] });
    await vi.waitFor(() => expect(q(el, "cw-node-ask")!.dataset.status).toBe("succeeded"));
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    obs.disconnect();
    expect(changed).toEqual([]);
  });

  test("run from here asks the kernel to rerun the selected node and what follows", async () => {
    const { el, model } = await mount();
    (el.querySelector('.react-flow__node[data-id="ask"]') as HTMLElement).click();
    await vi.waitFor(() => expect(q(el, "cw-run-from")).not.toBeNull());
    q(el, "cw-run-from")!.click();
    expect(model.sent).toContainEqual({ type: "run_from", id: "ask" });
    model.pySet("running", true);
    await vi.waitFor(() => expect((q(el, "cw-run-from") as HTMLButtonElement).disabled).toBe(true));
  });

  test("run this node asks the kernel to rerun the selected node alone, and shows a refusal", async () => {
    const { el, model } = await mount();
    (el.querySelector('.react-flow__node[data-id="branch"]') as HTMLElement).click();
    await vi.waitFor(() => expect(q(el, "cw-run-node")).not.toBeNull());
    q(el, "cw-run-node")!.click();
    expect(model.sent).toContainEqual({ type: "run_node", id: "branch" });
    expect(model.sent.filter((m) => m.type === "run_from")).toEqual([]);
    model.pySend({ type: "refused", reason: "the last run did not reach 'ask', before 'branch'" });
    await vi.waitFor(() => expect(q(el, "cw-message")!.textContent).toContain("did not reach 'ask'"));
    model.pySet("running", true);
    await vi.waitFor(() => expect((q(el, "cw-run-node") as HTMLButtonElement).disabled).toBe(true));
  });

  test("the panel edits a prompt and shows the kernel's problems in place", async () => {
    const { el, model } = await mount();
    (el.querySelector('.react-flow__node[data-id="ask"]') as HTMLElement).click();
    await vi.waitFor(() => expect(q(el, "cw-panel")).not.toBeNull());
    const field = q(el, "cw-field-prompt_template.0.text") as HTMLTextAreaElement;
    expect(field.value).toBe("hi");
    await userEvent.fill(field, "Summarise {{#start.text#}}");
    field.blur();
    await vi.waitFor(() => expect(model.sent.find((m) => m.type === "update_config")).toBeDefined());
    expect(model.sent.find((m) => m.type === "update_config")).toEqual({
      type: "update_config", id: "ask", path: "prompt_template.0.text", value: "Summarise {{#start.text#}}",
    });
    model.pySet("problems", [{ node_id: "ask", field: "prompt_template[0].text", message: "start has no output text", hint: "", level: "error" }]);
    await vi.waitFor(() => expect(q(el, "cw-problem-prompt_template.0.text")?.textContent).toContain("no output text"));
  });

  test("an agent's panel lists its tools, bound or not, and its steps", async () => {
    const state = graph();
    state.nodes.push(node("agent", "agent", {
      tools: [
        { name: "add", provider: "python", field: "agent_parameters.tools[0]", bound: "python/add",
          kind: "python", description: "Add two numbers.", arguments: ["a", "b"] },
        { name: "search", provider: "tavily", field: "agent_parameters.tools[1]", bound: null,
          problem: "no registered tool is named 'search'", fix: "register a tool named 'search'" },
      ],
    }));
    const { el, model } = await mount(state);
    (el.querySelector('.react-flow__node[data-id="agent"]') as HTMLElement).click();
    await vi.waitFor(() => expect(q(el, "cw-tools")).not.toBeNull());
    const bound = q(el, "cw-tool-add")!;
    expect(bound.dataset.bound).toBe("yes");
    expect(bound.textContent).toBe("python/add(a, b) Add two numbers.");
    const unbound = q(el, "cw-tool-search")!;
    expect(unbound.dataset.bound).toBe("no");
    expect(unbound.textContent).toContain("tavily/searchnot registered: no registered tool is named 'search'. Fix: register");
    expect(q(el, "cw-steps")).toBeNull();
    model.pySend({ type: "status", patches: [{ agent: { status: "succeeded", steps: [
      { step: 2, type: "tool", title: "add", status: "failed", error: "boom" },
      { step: 1, type: "llm", title: "wire/m", status: "succeeded", tokens: 7, output: "" },
    ] } }] });
    await vi.waitFor(() => expect(q(el, "cw-steps")).not.toBeNull());
    const rows = [...q(el, "cw-steps")!.querySelectorAll("[data-testid^='cw-step-']")];
    expect(rows.map((r) => r.textContent)).toEqual(["1. model wire/m (7 tokens) ", "2. tool add boom"]);
    expect((rows[1] as HTMLElement).dataset.status).toBe("failed");
  });

  test("palette, undo and a kernel refusal", async () => {
    const { el, model } = await mount();
    q(el, "cw-palette-code")!.click();
    expect(model.sent.find((m) => m.type === "add_node")).toMatchObject({ type: "add_node", node_type: "code", parent: null });
    expect((q(el, "cw-undo") as HTMLButtonElement).disabled).toBe(true);
    model.pySet("can_undo", true);
    await vi.waitFor(() => expect((q(el, "cw-undo") as HTMLButtonElement).disabled).toBe(false));
    q(el, "cw-undo")!.click();
    expect(model.sent.at(-1)).toEqual({ type: "undo" });
    model.pySend({ type: "refused", reason: "would make a cycle" });
    await vi.waitFor(() => expect(q(el, "cw-message")!.textContent).toContain("cycle"));
  });

  test("presses stay in the editor and toolbar buttons leave the focus where it is", async () => {
    const outside: string[] = [];
    const listen = () => outside.push("mousedown");
    document.body.addEventListener("mousedown", listen);
    const { el } = await mount();
    const press = (target: HTMLElement) => {
      const e = new MouseEvent("mousedown", { bubbles: true, cancelable: true, button: 0 });
      target.dispatchEvent(e);
      return e;
    };
    // A notebook (an ancestor) never sees it, so it cannot pull the focus to its cell...
    expect(press(q(el, "cw-run")!).defaultPrevented).toBe(true); // ...nor does the button take it
    expect(press(q(el, "cw-message")!).defaultPrevented).toBe(false);
    expect(outside).toEqual([]);
    document.body.removeEventListener("mousedown", listen);
  });

  test("a focused button that gets disabled hands the focus to the editor", async () => {
    const { el } = await mount();
    const run = q(el, "cw-run") as HTMLButtonElement;
    run.focus();
    run.disabled = true; // as when a run starts; the browser then drops the focus:
    run.dispatchEvent(new FocusEvent("focusout", { bubbles: true, relatedTarget: null }));
    expect(document.activeElement).toBe(q(el, "cw-focus"));
    // Leaving the editor for elsewhere is left alone.
    const fit = q(el, "cw-fit") as HTMLButtonElement;
    fit.focus();
    fit.dispatchEvent(new FocusEvent("focusout", { bubbles: true, relatedTarget: null }));
    expect(document.activeElement).toBe(fit);
  });

  test("a graph change from Python shows without remounting", async () => {
    const { el, model } = await mount();
    const g = graph();
    model.pySet("nodes", [...g.nodes, node("extra", "code", { position: { x: 900, y: 0 } })]);
    await vi.waitFor(() => expect(q(el, "cw-node-extra")).not.toBeNull());
    model.pySet("nodes", g.nodes.filter((n) => n.id !== "end"));
    await vi.waitFor(() => expect(q(el, "cw-node-end")).toBeNull());
  });
});

describe("roomy editor", () => {
  const box = (el: Element) => el.getBoundingClientRect();
  const overlaps = (a: DOMRect, b: DOMRect) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

  test("a new node goes to the free place nearest the middle, never on another", () => {
    const boxes = [{ x: -110, y: -38, w: 220, h: 76 }, { x: 150, y: -38, w: 220, h: 76 }];
    const spot = freeSpot({ x: 0, y: 0 }, { w: 220, h: 76 }, boxes);
    for (const b of boxes) {
      const apart = spot.x + 220 <= b.x || b.x + b.w <= spot.x || spot.y + 76 <= b.y || b.y + b.h <= spot.y;
      expect(apart).toBe(true);
    }
    expect(freeSpot({ x: 1000, y: 1000 }, { w: 220, h: 76 }, boxes)).toEqual({ x: 890, y: 962 });
  });

  test("the palette adds a node beside the one in the middle, and marks types that cannot run", async () => {
    const state = graph();
    state.nodes = [node("start", "start", { position: { x: 0, y: 0 } }), node("end", "end", { position: { x: 300, y: 0 } })];
    state.edges = [];
    state.node_types = [
      ...graph().node_types,
      { name: "trigger-webhook", description: "", container: false, start: true, schema: { type: "object" }, needs: "cannot run here: needs a Dify webhook" } as any,
    ];
    const { el, model } = await mount(state);
    q(el, "cw-palette-code")!.click();
    const { position } = model.sent.find((m) => m.type === "add_node");
    for (const n of state.nodes) {
      const p = n.position!;
      const apart = position.x + 220 <= p.x || p.x + 220 <= position.x || position.y + 76 <= p.y || p.y + 76 <= position.y;
      expect(apart, `${JSON.stringify(position)} on ${n.id}`).toBe(true);
    }
    const blocked = q(el, "cw-palette-trigger-webhook")!;
    expect(blocked.dataset.runs).toBe("false");
    expect(blocked.title).toContain("needs a Dify webhook"); // also as an icon
    q(el, "cw-palette-toggle")!.click();
    await vi.waitFor(() => expect(q(el, "cw-palette")!.classList.contains("cw-palette-closed")).toBe(false));
    expect(blocked.textContent).toContain("can't run here");
    expect(blocked.title).toContain("needs a Dify webhook");
    expect(q(el, "cw-palette-code")!.dataset.runs).toBe("true");
  });

  test("palette and panel collapse, and Expand gives the canvas the whole width", async () => {
    const { el } = await mount();
    const canvas = q(el, "cw-canvas")!;
    // 1000 px wide: the palette starts as a strip of icons; its toggle opens it.
    await vi.waitFor(() => expect(q(el, "cw-palette")!.classList.contains("cw-palette-closed")).toBe(true));
    expect(q(el, "cw-palette-code")!.textContent).toBe("{}");
    q(el, "cw-palette-toggle")!.click();
    await vi.waitFor(() => expect(q(el, "cw-palette-code")!.textContent).toBe("{}code"));
    (el.querySelector('.react-flow__node[data-id="ask"]') as HTMLElement).click();
    await vi.waitFor(() => expect(q(el, "cw-panel")).not.toBeNull());
    const narrow = box(canvas).width;
    // Beside the canvas, never over it.
    expect(overlaps(box(q(el, "cw-panel")!), box(canvas))).toBe(false);
    expect(overlaps(box(q(el, "cw-palette")!), box(canvas))).toBe(false);
    q(el, "cw-panel-collapse")!.click();
    await vi.waitFor(() => expect(q(el, "cw-panel")).toBeNull());
    expect(q(el, "cw-panel-strip")).not.toBeNull();
    q(el, "cw-panel-strip")!.click();
    await vi.waitFor(() => expect(q(el, "cw-panel")).not.toBeNull());
    q(el, "cw-expand")!.click();
    await vi.waitFor(() => expect(q(el, "cw-panel")).toBeNull());
    expect(q(el, "cw-palette")!.classList.contains("cw-palette-closed")).toBe(true);
    expect(box(canvas).width).toBeGreaterThan(narrow + 350);
    q(el, "cw-expand")!.click();
    await vi.waitFor(() => expect(q(el, "cw-palette")!.classList.contains("cw-palette-closed")).toBe(false));
  });

  test("the status line says how the last run ended, with its time, tokens and cost", async () => {
    const { el, model } = await mount();
    expect(q(el, "cw-run-status")!.textContent).toBe("not run yet");
    model.pySet("running", true);
    await vi.waitFor(() => expect(q(el, "cw-run-status")!.textContent).toBe("running…"));
    model.pySet("run_summary", { run_id: "r1", status: "failed", elapsed_ms: 1534.2, tokens: 120, cost: 0.00123, error: "model said no", error_node: "ask", ended_at: null });
    model.pySet("running", false);
    await vi.waitFor(() => expect(q(el, "cw-run-status")!.textContent).toBe("last run failed · 1.53 s · 120 tokens · $0.0012 · at ask"));
    expect(q(el, "cw-run-status")!.title).toContain("model said no");
    expect(summaryText({ run_id: "r", status: "succeeded", elapsed_ms: 12, tokens: 0, cost: 0, error: null, error_node: null, ended_at: null }))
      .toBe("last run succeeded · 12 ms · 0 tokens · $0");
  });

  test("the selected node's panel shows its whole error", async () => {
    const { el, model } = await mount();
    const long = "the model answered 429: rate limited. ".repeat(8) + "THE END";
    model.pySend({ type: "status", patch: { ask: { status: "failed", error: long } } });
    await vi.waitFor(() => expect(q(el, "cw-error-ask")).not.toBeNull());
    (el.querySelector('.react-flow__node[data-id="ask"]') as HTMLElement).click();
    await vi.waitFor(() => expect(q(el, "cw-panel-error")?.textContent).toContain("THE END"));
    expect(q(el, "cw-error-ask")!.classList.contains("cw-error-full")).toBe(true);
    const pre = q(el, "cw-panel-error")!.querySelector("pre")!;
    expect(pre.textContent).toBe(long);
    expect(pre.scrollWidth).toBeLessThanOrEqual(pre.clientWidth + 1); // wrapped, not cut off
  });

  test("an editor opened after a run shows that run's statuses from the first frame", async () => {
    const state = { ...graph(), status: { start: { status: "succeeded" }, ask: { status: "failed", error: "no" } },
      run_summary: { run_id: "r", status: "failed", elapsed_ms: 5, tokens: 0, cost: 0, error: "no", error_node: "ask", ended_at: null } };
    const { el } = await mount(state as any);
    expect(q(el, "cw-node-start")!.dataset.status).toBe("succeeded");
    expect(q(el, "cw-node-ask")!.dataset.status).toBe("failed");
    expect(q(el, "cw-run-status")!.textContent).toContain("last run failed");
  });

  test("Run asks for the start node's inputs in a typed form, then runs with them", async () => {
    const state = graph();
    state.nodes[0] = node("start", "start", { config: { variables: [
      { variable: "topic", label: "Topic", type: "text-input", required: true },
      { variable: "notes", type: "paragraph" },
      { variable: "n", type: "number", default: 3 },
      { variable: "tone", type: "select", options: ["dry", "warm"] },
      { variable: "doc", type: "file" },
    ] } });
    const { el, model } = await mount(state);
    q(el, "cw-run")!.click();
    await vi.waitFor(() => expect(q(el, "cw-run-form")).not.toBeNull());
    expect(model.sent.filter((m) => m.type === "run")).toEqual([]); // not silently, with nothing
    expect((q(el, "cw-input-notes") as HTMLElement).tagName).toBe("TEXTAREA");
    expect((q(el, "cw-input-n") as HTMLInputElement).type).toBe("number");
    expect((q(el, "cw-input-n") as HTMLInputElement).value).toBe("3");
    expect((q(el, "cw-input-tone") as HTMLElement).tagName).toBe("SELECT");
    expect((q(el, "cw-input-doc") as HTMLInputElement).placeholder).toContain("file");
    q(el, "cw-run-go")!.click();
    await vi.waitFor(() => expect(q(el, "cw-run-form-problem")?.textContent).toBe("Topic is required"));
    await userEvent.type(q(el, "cw-input-topic")!, "owls");
    await userEvent.selectOptions(q(el, "cw-input-tone")!, "warm");
    q(el, "cw-run-go")!.click();
    await vi.waitFor(() => expect(q(el, "cw-run-form")).toBeNull());
    expect(model.sent.filter((m) => m.type === "run")).toEqual([{ type: "run", inputs: { topic: "owls", n: 3, tone: "warm" } }]);
    // Inputs set from Python for every variable: Run runs at once; "Inputs…" opens the form.
    model.pySet("inputs", { topic: "cats", notes: "x", n: 1, tone: "dry", doc: "a.txt" });
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    q(el, "cw-run")!.click();
    expect(model.sent.at(-1)).toEqual({ type: "run" });
    q(el, "cw-run-inputs")!.click();
    await vi.waitFor(() => expect((q(el, "cw-input-topic") as HTMLInputElement)?.value).toBe("owls"));
    expect(formInputs([{ variable: "n", type: "number" }], { n: "x1" })).toEqual({ problem: 'n: "x1" is not a number' });
  });
});

describe("status store", () => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => r(null)));

  test("a burst is applied at frames, a limited number of nodes per frame, in arrival order", async () => {
    const store = new StatusStore();
    const seen: string[] = [];
    for (let i = 0; i < 60; i++) store.subscribe(`n${i}`, () => seen.push(`n${i}`));
    for (let i = 0; i < 60; i++) store.patch({ [`n${i}`]: { status: "running" } });
    for (let i = 0; i < 60; i++) store.patch({ [`n${i}`]: { status: "succeeded", elapsed: i } });
    expect(store.get("n0")).toBeUndefined(); // nothing before a frame
    await frame();
    expect(seen.length).toBe(NODES_PER_UPDATE);
    expect(seen[0]).toBe("n0");
    await vi.waitFor(() => expect(seen.length).toBe(60));
    expect(store.get("n59")).toEqual({ status: "succeeded", elapsed: 59 });
  });

  test("after an update the next one waits for the interval, and takes what came meanwhile", async () => {
    const store = new StatusStore({}, [], 60_000);
    const seen: string[] = [];
    for (const id of ["a", "b", "c"]) store.subscribe(id, () => seen.push(id));
    store.patch({ a: { status: "running" } });
    await frame();
    expect(seen).toEqual(["a"]); // the first change shows at the next frame
    store.patch({ b: { status: "running" } });
    store.patch({ c: { status: "running" } });
    await frame();
    await frame();
    expect(seen).toEqual(["a"]); // within the interval: queued
    store.flush();
    expect(seen).toEqual(["a", "b", "c"]);
  });

  test("a reset drops what is queued and keeps unchanged entries as they are", async () => {
    const store = new StatusStore({ a: { status: "succeeded", elapsed: 1 } });
    const a = store.get("a");
    store.patch({ b: { status: "running" } });
    store.reset({ a: { status: "succeeded", elapsed: 1 } });
    await frame();
    await frame();
    expect(store.get("a")).toBe(a);
    expect(store.get("b")).toBeUndefined();
  });

  test("a snapshot changes only what differs, at frames, after the patches of a run", async () => {
    const old: Record<string, StatusEntry> = {};
    for (let i = 0; i < 60; i++) old[`n${i}`] = { status: "succeeded", elapsed: i };
    const store = new StatusStore(old);
    const seen: string[] = [];
    for (let i = 0; i < 60; i++) store.subscribe(`n${i}`, () => seen.push(`n${i}`));
    store.reset({ n0: old.n0 }); // a run starts: every other colour goes
    store.patch({ n59: { status: "running" } }); // ...and its first node starts
    expect(store.get("n1")).toEqual(old.n1); // nothing before a frame
    await frame();
    expect(seen.length).toBe(NODES_PER_UPDATE);
    expect(seen[0]).toBe("n59"); // the run's news first
    expect(store.get("n59")).toEqual({ status: "running" }); // started afresh, not merged
    await vi.waitFor(() => expect(seen.length).toBe(59));
    expect(seen).not.toContain("n0"); // unchanged: not touched
    expect(store.get("n1")).toBeUndefined();
    expect(store.get("n0")).toBe(old.n0);
  });

  test("stale badges flip at frames, only the nodes whose flag changes, behind the statuses", async () => {
    const ids = Array.from({ length: 60 }, (_, i) => `n${i}`);
    const store = new StatusStore({}, ids);
    const seen: string[] = [];
    for (const id of [...ids, "x"]) store.subscribe(id, () => seen.push(id));
    store.setStale(["n0", "x"]); // a run was recorded: n0 was edited since, x is new
    store.patch({ n59: { status: "succeeded" } });
    expect(store.isStale("n1")).toBe(true); // nothing before a frame
    await frame();
    expect(seen.length).toBe(NODES_PER_UPDATE);
    expect(seen[0]).toBe("n59"); // the run's colours first
    // n1..n59 lose their badge and x gets one; n59's colour changed too.
    await vi.waitFor(() => expect(seen.length).toBe(61));
    expect(seen).not.toContain("n0"); // still stale: not touched
    expect(store.isStale("n0")).toBe(true);
    expect(store.isStale("x")).toBe(true);
    expect(ids.slice(1).some((id) => store.isStale(id))).toBe(false);
  });
});

