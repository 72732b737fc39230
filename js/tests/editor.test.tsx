import { afterEach, describe, expect, test, vi } from "vitest";
import { userEvent } from "vitest/browser";
import widget from "../src/widget";
import { connectionProblem } from "../src/graph";
import { NODES_PER_FRAME, StatusStore } from "../src/status";
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
    expect(seen.length).toBe(NODES_PER_FRAME);
    expect(seen[0]).toBe("n0");
    await vi.waitFor(() => expect(seen.length).toBe(60));
    expect(store.get("n59")).toEqual({ status: "succeeded", elapsed: 59 });
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
    expect(seen.length).toBe(NODES_PER_FRAME);
    expect(seen[0]).toBe("n59"); // the run's news first
    expect(store.get("n59")).toEqual({ status: "running" }); // started afresh, not merged
    await vi.waitFor(() => expect(seen.length).toBe(59));
    expect(seen).not.toContain("n0"); // unchanged: not touched
    expect(store.get("n1")).toBeUndefined();
    expect(store.get("n0")).toBe(old.n0);
  });
});

