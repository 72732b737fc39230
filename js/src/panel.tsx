/** The properties panel of the selected node, generated from its type's JSON Schema.
 * A field commits on blur or Ctrl+Enter; the kernel validates and sends problems back, which
 * show under the field they name. */
import { useEffect, useState } from "react";
import type { KeyboardEvent } from "react";
import { useEditor, useTrait } from "./context";
import { SUPPRESS } from "./graph";
import { useStatus } from "./status";
import type { CwNode, HumanForm, JsonSchema, NodeTool, Problem, StatusEntry, StepEntry } from "./types";

type Commit = (path: string, value: unknown) => void;

const LONG_TEXT = /(text|code|template|prompt|answer|query|instruction|body|content|desc)/i;

function resolve(schema: JsonSchema | undefined, root: JsonSchema, value: unknown): JsonSchema {
  let s: JsonSchema = schema ?? {};
  for (let i = 0; i < 8; i++) {
    if (s.$ref) {
      const name = s.$ref.split("/").pop()!;
      s = { ...(root.$defs?.[name] ?? {}), ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== "$ref")) };
      continue;
    }
    const options = s.anyOf ?? s.oneOf;
    if (options) {
      const nonNull = options.filter((o) => o.type !== "null");
      const pick =
        nonNull.find((o) => matches(resolve(o, root, undefined), value)) ?? nonNull[0] ?? options[0];
      const { anyOf: _a, oneOf: _o, ...rest } = s;
      s = { ...rest, ...pick };
      continue;
    }
    break;
  }
  return s;
}

function matches(s: JsonSchema, value: unknown): boolean {
  if (value === undefined || value === null) return false;
  const t = Array.isArray(s.type) ? s.type[0] : s.type;
  if (Array.isArray(value)) return t === "array";
  if (typeof value === "object") return t === "object" || (!t && !!s.properties);
  if (typeof value === "string") return t === "string";
  if (typeof value === "number") return t === "number" || t === "integer";
  if (typeof value === "boolean") return t === "boolean";
  return false;
}

export const normalizePath = (field: string): string => field.replace(/\[(\d+)\]/g, ".$1");

function defaultFor(s: JsonSchema, root: JsonSchema): unknown {
  const r = resolve(s, root, undefined);
  if (r.default !== undefined && r.default !== null) return r.default;
  if (r.type === "object" || r.properties) {
    const out: Record<string, unknown> = {};
    for (const k of r.required ?? []) out[k] = defaultFor(r.properties?.[k] ?? {}, root);
    return out;
  }
  if (r.type === "array") return [];
  if (r.type === "number" || r.type === "integer") return 0;
  if (r.type === "boolean") return false;
  return "";
}

function onCtrlEnter(e: KeyboardEvent<HTMLElement>) {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) (e.currentTarget as HTMLElement).blur();
}

type FieldProps = {
  name: string;
  path: string;
  schema: JsonSchema;
  root: JsonSchema;
  value: unknown;
  commit: Commit;
  problems: Map<string, string>;
};

function TextField({ path, value, long, commit, parse, kind }: {
  path: string; value: string; long: boolean; commit: (v: string) => void; parse?: (v: string) => string | null; kind?: string;
}) {
  const [draft, setDraft] = useState(value);
  const [err, setErr] = useState<string | null>(null);
  useEffect(() => setDraft(value), [value]);
  const done = () => {
    if (draft === value) return;
    const problem = parse?.(draft) ?? null;
    setErr(problem);
    if (!problem) commit(draft);
  };
  const common = {
    "data-testid": `cw-field-${path}`,
    ...SUPPRESS,
    value: draft,
    onChange: (e: { target: { value: string } }) => setDraft(e.target.value),
    onBlur: done,
    onKeyDown: onCtrlEnter,
    className: "cw-input",
  };
  return (
    <>
      {long ? <textarea rows={Math.min(12, Math.max(3, draft.split("\n").length + 1))} {...common} /> : <input type={kind ?? "text"} {...common} />}
      {err ? <div className="cw-field-problem">{err}</div> : null}
    </>
  );
}

function Field(p: FieldProps) {
  const s = resolve(p.schema, p.root, p.value);
  const t = Array.isArray(s.type) ? s.type[0] : s.type;
  // The property's own name, not the title of a shared definition ("ModelConfig").
  const label = p.schema.title ?? (/^\d+$/.test(p.name) ? `#${Number(p.name) + 1}` : p.schema.$ref ? p.name : s.title ?? p.name);
  const problem = p.problems.get(p.path);
  let input: JSX.Element;
  if (s.enum) {
    input = (
      <select
        data-testid={`cw-field-${p.path}`}
        {...SUPPRESS}
        className="cw-input"
        value={String(p.value ?? s.default ?? "")}
        onChange={(e) => p.commit(p.path, e.target.value)}
      >
        {s.enum.map((v) => <option key={String(v)} value={String(v)}>{String(v)}</option>)}
      </select>
    );
  } else if (t === "boolean") {
    input = (
      <input
        type="checkbox"
        data-testid={`cw-field-${p.path}`}
        {...SUPPRESS}
        checked={Boolean(p.value ?? s.default)}
        onChange={(e) => p.commit(p.path, e.target.checked)}
      />
    );
  } else if (t === "string") {
    input = (
      <TextField
        path={p.path}
        value={String(p.value ?? "")}
        long={LONG_TEXT.test(p.name) || String(p.value ?? "").includes("\n")}
        commit={(v) => p.commit(p.path, v)}
      />
    );
  } else if (t === "number" || t === "integer") {
    input = (
      <TextField
        path={p.path}
        value={p.value === undefined || p.value === null ? "" : String(p.value)}
        long={false}
        commit={(v) => p.commit(p.path, v.trim() === "" ? null : Number.isNaN(Number(v)) ? v : Number(v))}
      />
    );
  } else if ((t === "object" || s.properties) && s.properties && (p.value === undefined || p.value === null || typeof p.value === "object")) {
    return (
      <fieldset className="cw-fieldset">
        <legend>{label}</legend>
        <ObjectFields {...p} schema={s} value={(p.value ?? {}) as Record<string, unknown>} />
        {problem ? <div className="cw-field-problem" data-testid={`cw-problem-${p.path}`}>{problem}</div> : null}
      </fieldset>
    );
  } else if (t === "array" && s.items && Array.isArray(p.value ?? []) && isObjectSchema(resolve(s.items, p.root, undefined))) {
    const items = (p.value ?? []) as unknown[];
    return (
      <fieldset className="cw-fieldset">
        <legend>{label}</legend>
        {items.map((item, i) => (
          <div className="cw-array-item" key={i}>
            <Field {...p} name={`${i}`} path={`${p.path}.${i}`} schema={s.items!} value={item} />
            <button className="cw-small" title="remove" onClick={() => p.commit(p.path, items.filter((_, j) => j !== i))}>
              remove
            </button>
          </div>
        ))}
        <button className="cw-small" data-testid={`cw-add-${p.path}`} onClick={() => p.commit(p.path, [...items, defaultFor(s.items!, p.root)])}>
          + add
        </button>
        {problem ? <div className="cw-field-problem" data-testid={`cw-problem-${p.path}`}>{problem}</div> : null}
      </fieldset>
    );
  } else if (t === "array" && s.items && (resolve(s.items, p.root, undefined).type === "string") && (Array.isArray(p.value) || p.value == null)) {
    // Selectors and string lists: edited as dotted text (start.query).
    input = (
      <TextField
        path={p.path}
        value={((p.value ?? []) as string[]).join(".")}
        long={false}
        commit={(v) => p.commit(p.path, v.trim() ? v.split(".").map((x) => x.trim()) : [])}
      />
    );
  } else {
    input = (
      <TextField
        path={p.path}
        value={p.value === undefined ? "" : JSON.stringify(p.value, null, 2)}
        long
        parse={(v) => {
          try {
            JSON.parse(v || "null");
            return null;
          } catch (e) {
            return `not JSON: ${(e as Error).message}`;
          }
        }}
        commit={(v) => p.commit(p.path, JSON.parse(v || "null"))}
      />
    );
  }
  return (
    <label className={`cw-field${problem ? " cw-invalid" : ""}`}>
      <span className="cw-label" title={s.description}>{label}</span>
      {input}
      {problem ? <div className="cw-field-problem" data-testid={`cw-problem-${p.path}`}>{problem}</div> : null}
    </label>
  );
}

function isObjectSchema(s: JsonSchema): boolean {
  return s.type === "object" || !!s.properties;
}

function ObjectFields(p: FieldProps & { value: Record<string, unknown> }) {
  const s = p.schema;
  const keys = Object.keys(s.properties ?? {});
  const extra = Object.keys(p.value).filter((k) => !keys.includes(k));
  return (
    <>
      {keys.map((k) => (
        <Field key={k} {...p} name={k} path={p.path ? `${p.path}.${k}` : k} schema={s.properties![k]} value={p.value[k]} />
      ))}
      {extra.map((k) => (
        <Field key={k} {...p} name={k} path={p.path ? `${p.path}.${k}` : k} schema={{}} value={p.value[k]} />
      ))}
    </>
  );
}

function Values({ title, values }: { title: string; values?: Record<string, string> }) {
  if (!values || !Object.keys(values).length) return null;
  return (
    <div className="cw-values">
      <div className="cw-values-title">{title}</div>
      {Object.entries(values).map(([k, v]) => (
        <div key={k} className="cw-value"><b>{k}</b> <code>{v}</code></div>
      ))}
    </div>
  );
}

export type PanelProps = {
  node: CwNode;
  schema: JsonSchema | undefined;
  problems: Problem[];
  send: (msg: Record<string, unknown>) => void;
  onCollapse?: () => void;
};

export function PropertiesPanel({ node, schema, problems, send, onCollapse }: PanelProps) {
  const byField = new Map<string, string>();
  const loose: Problem[] = [];
  for (const pr of problems) {
    if (pr.field && !["id", "type", "parent", "edges"].includes(pr.field) && !pr.field.startsWith("edges")) {
      const key = normalizePath(pr.field);
      byField.set(key, [byField.get(key), pr.message + (pr.hint ? ` (${pr.hint})` : "")].filter(Boolean).join("; "));
    } else loose.push(pr);
  }
  const shown = new Set<string>();
  const commit: Commit = (path, value) => send({ type: "update_config", id: node.id, path, value });
  const root = schema ?? { type: "object" };
  const config = node.config ?? {};
  // Problems naming a field the form does not show stay visible at the top.
  const visit = (s: JsonSchema, v: unknown, path: string) => {
    shown.add(path);
    const r = resolve(s, root, v);
    if (r.properties && v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k, sub] of Object.entries(r.properties)) visit(sub, (v as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
    }
    if (Array.isArray(v)) v.forEach((item, i) => visit(r.items ?? {}, item, `${path}.${i}`));
  };
  visit(root, config, "");
  for (const k of Object.keys(config)) shown.add(k);
  const unplaced = [...byField.entries()].filter(([k]) => !shown.has(k));
  return (
    <div className="cw-panel" data-testid="cw-panel" tabIndex={-1} {...SUPPRESS}>
      <div className="cw-panel-head">
        <b>{node.type}</b> <code>{node.id}</code>
        {onCollapse ? (
          <button className="cw-small cw-close" data-testid="cw-panel-collapse" title="collapse the panel" onClick={onCollapse}>
            ›
          </button>
        ) : null}
      </div>
      <NodeError id={node.id} />
      <RunFrom id={node.id} send={send} />
      <label className="cw-field">
        <span className="cw-label">title</span>
        <NodeField id={node.id} field="title" value={node.title} send={send} />
      </label>
      <label className="cw-field">
        <span className="cw-label">on error</span>
        <select
          className="cw-input"
          data-testid="cw-node-field-error_strategy"
          {...SUPPRESS}
          value={node.error_strategy}
          onChange={(e) => send({ type: "update_node", id: node.id, fields: { error_strategy: e.target.value } })}
        >
          <option value="fail">fail</option>
          <option value="default-value">default value</option>
          <option value="fail-branch">fail branch</option>
        </select>
      </label>
      {[...loose, ...unplaced.map(([field, message]) => ({ field, message } as Problem))].map((pr, i) => (
        <div key={i} className={`cw-field-problem${pr.level === "warning" ? " cw-warning" : ""}`} data-testid="cw-problem">
          {pr.field ? <code>{pr.field}</code> : null} {pr.message}
        </div>
      ))}
      <Tools tools={node.tools} />
      <ObjectFields name="" path="" schema={resolve(root, root, config)} root={root} value={config} commit={commit} problems={byField} />
      <LastRun id={node.id} />
    </div>
  );
}

/** The error of the node's last run, whole, at the top of its panel (the node's badge has
 * room for two lines). */
function NodeError({ id }: { id: string }) {
  const entry = useStatus(useEditor().store, id);
  if (!entry?.error) return null;
  return (
    <div className="cw-panel-error" data-testid="cw-panel-error" role="alert">
      <div className="cw-values-title">{entry.handled ? "error (handled by the node's error strategy)" : "error"}</div>
      <pre>{entry.error}</pre>
    </div>
  );
}

/** The node's last inputs and outputs; subscribed here, so a status change of the selected
 * node re-renders this block only. */
function LastRun({ id }: { id: string }) {
  const entry: StatusEntry | undefined = useStatus(useEditor().store, id);
  if (!entry) return null;
  return (
    <div className="cw-io" data-testid="cw-io">
      <div className="cw-values-title">last run: {entry.status}</div>
      {entry.status === "paused" && entry.form ? <FormToAnswer key={entry.form.run_id} form={entry.form} /> : null}
      <Values title="inputs" values={entry.inputs} />
      <Values title="outputs" values={entry.outputs} />
      <Steps steps={entry.steps} />
    </div>
  );
}

/** The tools a tool or agent node names: the registered tool each binds to (its arguments
 * and description), or why none does and how to register one. */
function Tools({ tools }: { tools?: NodeTool[] }) {
  if (!tools || tools.length === 0) return null;
  return (
    <div className="cw-values" data-testid="cw-tools">
      <div className="cw-values-title">tools</div>
      {tools.map((t) => (
        <div key={t.field} className="cw-value" data-testid={`cw-tool-${t.name}`} data-bound={t.bound ? "yes" : "no"}>
          {t.bound ? (
            <>
              <b>{t.bound}</b>({(t.arguments ?? []).join(", ")}) <span>{t.description}</span>
            </>
          ) : (
            <>
              <b>{t.provider ? `${t.provider}/${t.name}` : t.name}</b>
              <div className="cw-field-problem">not registered: {t.problem}. Fix: {t.fix}</div>
            </>
          )}
        </div>
      ))}
    </div>
  );
}

/** An agent's model and tool calls: what each did and what it used, in step order. */
function Steps({ steps }: { steps?: StepEntry[] }) {
  if (!steps || steps.length === 0) return null;
  return (
    <div className="cw-values" data-testid="cw-steps">
      <div className="cw-values-title">steps</div>
      {[...steps].sort((a, b) => a.step - b.step).map((s) => (
        <div key={s.step} className="cw-value" data-testid={`cw-step-${s.step}`} data-status={s.status} data-type={s.type}>
          <b>{s.step}. {s.type === "llm" ? "model" : "tool"} {s.title}</b>
          {s.tokens ? ` (${s.tokens} tokens)` : ""} <code>{s.error ?? s.output ?? ""}</code>
        </div>
      ))}
    </div>
  );
}

/** The form a paused human-input node waits on: its content, its inputs (prefilled with their
 * defaults) and a button per action; a button answers it and the kernel resumes the run. */
function FormToAnswer({ form }: { form: HumanForm }) {
  const { model } = useEditor();
  const [values, setValues] = useState<Record<string, string>>(() =>
    Object.fromEntries(form.fields.map((f) => [f.name, f.default == null ? "" : String(f.default)])),
  );
  const set = (name: string, value: string) => setValues((old) => ({ ...old, [name]: value }));
  const answer = (action: string) =>
    model.send({ type: "respond", run_id: form.run_id, node: form.node_id, action, values });
  const due = form.expires_at == null ? null : new Date(form.expires_at * 1000);
  return (
    <div className="cw-form" data-testid="cw-form">
      <div className="cw-values-title">waiting for input{due ? ` until ${due.toLocaleString()}` : ""}</div>
      <div className="cw-form-content" data-testid="cw-form-content">{form.content}</div>
      {form.fields.map((f) => (
        <label className="cw-field" key={f.name}>
          <span className="cw-label">{f.name}</span>
          {f.type === "select" ? (
            <select className="cw-input" data-testid={`cw-form-field-${f.name}`} {...SUPPRESS}
              value={values[f.name]} onChange={(e) => set(f.name, e.target.value)}>
              {(f.options ?? []).map((o) => <option key={o} value={o}>{o}</option>)}
            </select>
          ) : f.type === "file" || f.type === "file-list" ? (
            <span className="cw-label">answer file inputs from Python: run.respond(...)</span>
          ) : (
            <textarea className="cw-input" rows={f.type === "paragraph" ? 3 : 1}
              data-testid={`cw-form-field-${f.name}`} {...SUPPRESS}
              value={values[f.name]} onChange={(e) => set(f.name, e.target.value)} />
          )}
        </label>
      ))}
      <div className="cw-panel-actions">
        {form.actions.map((a) => (
          <button key={a.id} className={`cw-small cw-action-${a.button_style}`}
            data-testid={`cw-form-action-${a.id}`} onClick={() => answer(a.id)}>
            {a.title || a.id}
          </button>
        ))}
      </div>
    </div>
  );
}

/** Run this node (alone, or with what follows it) again, reusing the editor's last run for
 * the nodes before it (the kernel refuses, saying why, when there is no such run or it did
 * not reach this node's inputs). */
function RunFrom({ id, send }: { id: string; send: PanelProps["send"] }) {
  const { model } = useEditor();
  const running = useTrait<boolean>(model, "running");
  return (
    <div className="cw-panel-actions">
      <button
        className="cw-small"
        data-testid="cw-run-node"
        disabled={running}
        title="run only this node, on the values the nodes before it had in the last run"
        onClick={() => send({ type: "run_node", id })}
      >
        ▶ Run this node
      </button>{" "}
      <button
        className="cw-small"
        data-testid="cw-run-from"
        disabled={running}
        title="run this node and everything downstream; the nodes before it keep their last results"
        onClick={() => send({ type: "run_from", id })}
      >
        ▶▶ Run from here
      </button>
    </div>
  );
}

function NodeField({ id, field, value, send }: { id: string; field: string; value: string; send: PanelProps["send"] }) {
  const [draft, setDraft] = useState(value);
  useEffect(() => setDraft(value), [value]);
  return (
    <input
      className="cw-input"
      data-testid={`cw-node-field-${field}`}
      {...SUPPRESS}
      value={draft}
      onChange={(e) => setDraft(e.target.value)}
      onKeyDown={onCtrlEnter}
      onBlur={() => draft !== value && send({ type: "update_node", id, fields: { [field]: draft } })}
    />
  );
}
