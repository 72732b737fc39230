/** Running from the editor: the inputs form typed from the start node's variables, and the
 * status line that says how the last run ended. */
import { useState } from "react";
import type { FormEvent, KeyboardEvent } from "react";
import { useTrait } from "./context";
import { SUPPRESS } from "./graph";
import type { AnyModel, CwNode, RunSummary, StartVariable } from "./types";

/** The variables the top-level start node declares (none without a start node). */
export function startVariables(nodes: CwNode[]): StartVariable[] {
  const start = nodes.find((n) => n.type === "start" && !n.parent);
  const vars = (start?.config.variables as StartVariable[] | undefined) ?? [];
  return vars.filter((v) => v && typeof v.variable === "string" && v.variable);
}

/** Whether Run needs the form: a declared input has no value yet (the ``inputs`` trait). */
export function needsForm(vars: StartVariable[], given: Record<string, unknown> | undefined): boolean {
  return vars.some((v) => given?.[v.variable] === undefined || given[v.variable] === "");
}

type Draft = Record<string, string | boolean>;

function initial(v: StartVariable, given: Record<string, unknown>): string | boolean {
  const value = given[v.variable] ?? v.default;
  if (v.type === "checkbox") return Boolean(value);
  if (value === undefined || value === null) return v.type === "select" ? (v.options?.[0] ?? "") : "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

/** The draft as run inputs, or the first problem (a required input left empty, a number or
 * JSON that does not parse). Empty optional inputs are left out: the start node's default
 * then applies. */
export function formInputs(vars: StartVariable[], draft: Draft): { inputs: Record<string, unknown> } | { problem: string } {
  const inputs: Record<string, unknown> = {};
  for (const v of vars) {
    const raw = draft[v.variable];
    const name = v.label || v.variable;
    if (typeof raw === "boolean") {
      inputs[v.variable] = raw;
      continue;
    }
    const text = raw ?? "";
    if (text.trim() === "") {
      if (v.required) return { problem: `${name} is required` };
      continue;
    }
    if (v.type === "number") {
      const n = Number(text);
      if (Number.isNaN(n)) return { problem: `${name}: ${JSON.stringify(text)} is not a number` };
      inputs[v.variable] = n;
    } else if (v.type === "json_object") {
      try {
        inputs[v.variable] = JSON.parse(text);
      } catch (e) {
        return { problem: `${name}: not JSON (${(e as Error).message})` };
      }
    } else if (v.type === "file-list") {
      inputs[v.variable] = text.split("\n").map((x) => x.trim()).filter(Boolean);
    } else inputs[v.variable] = text;
  }
  return { inputs };
}

type FormProps = {
  vars: StartVariable[];
  given: Record<string, unknown>;
  onRun: (inputs: Record<string, unknown>) => void;
  onClose: () => void;
};

/** The run's inputs, one field per start variable, typed by its declaration. */
export function RunForm({ vars, given, onRun, onClose }: FormProps) {
  const [draft, setDraft] = useState<Draft>(() => Object.fromEntries(vars.map((v) => [v.variable, initial(v, given)])));
  const [problem, setProblem] = useState<string | null>(null);
  // Enter runs, said here: in JupyterLab the notebook's key handling keeps the browser from
  // submitting the form by itself.
  const onEnter = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key !== "Enter" || e.nativeEvent.isComposing) return;
    e.preventDefault();
    submit();
  };
  const set = (name: string, value: string | boolean) => setDraft((d) => ({ ...d, [name]: value }));
  const submit = (e?: FormEvent) => {
    e?.preventDefault();
    const out = formInputs(vars, draft);
    if ("problem" in out) setProblem(out.problem);
    else onRun(out.inputs);
  };
  return (
    <form className="cw-panel cw-run-form" data-testid="cw-run-form" tabIndex={-1} {...SUPPRESS} onSubmit={submit}>
      <div className="cw-panel-head">
        <b>Run with inputs</b>
        <button type="button" className="cw-small cw-close" data-testid="cw-run-form-close" title="close" onClick={onClose}>
          ×
        </button>
      </div>
      {vars.map((v) => {
        const id = `cw-input-${v.variable}`;
        const value = draft[v.variable];
        const common = { "data-testid": id, ...SUPPRESS, className: "cw-input" };
        let input: JSX.Element;
        if (v.type === "checkbox") {
          input = <input type="checkbox" {...common} className="" checked={Boolean(value)} onChange={(e) => set(v.variable, e.target.checked)} />;
        } else if (v.type === "select") {
          input = (
            <select {...common} value={String(value)} onChange={(e) => set(v.variable, e.target.value)}>
              {(v.options ?? []).map((o) => <option key={o} value={o}>{o}</option>)}
            </select>
          );
        } else if (v.type === "paragraph" || v.type === "json_object" || v.type === "file-list") {
          input = (
            <textarea
              {...common}
              rows={4}
              placeholder={v.type === "file-list" ? "one file path or URL a line" : v.type === "json_object" ? "{ }" : ""}
              value={String(value)}
              onChange={(e) => set(v.variable, e.target.value)}
              onKeyDown={(e) => e.key === "Enter" && (e.ctrlKey || e.metaKey) && submit()}
            />
          );
        } else {
          input = (
            <input
              {...common}
              type={v.type === "number" ? "number" : "text"}
              step={v.type === "number" ? "any" : undefined}
              placeholder={v.type === "file" ? "file path or URL" : ""}
              value={String(value)}
              onChange={(e) => set(v.variable, e.target.value)}
              onKeyDown={onEnter}
            />
          );
        }
        return (
          <label className="cw-field" key={v.variable}>
            <span className="cw-label">
              {v.label || v.variable}
              {v.label && v.label !== v.variable ? <code> {v.variable}</code> : null}
              {" "}<i>{v.type ?? "text-input"}</i>
              {v.required ? <b className="cw-required" title="required"> *</b> : null}
            </span>
            {input}
          </label>
        );
      })}
      {problem ? <div className="cw-field-problem" data-testid="cw-run-form-problem">{problem}</div> : null}
      <div className="cw-panel-actions">
        <button type="submit" className="cw-small cw-action-primary" data-testid="cw-run-go">▶ Run</button>{" "}
        <button type="button" className="cw-small" onClick={onClose}>Cancel</button>
      </div>
    </form>
  );
}

export function fmtMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** The costs are small: four decimals, and "$0" only for a free run. */
export function fmtCost(cost: number | null | undefined): string {
  if (cost === null || cost === undefined) return "cost unknown";
  return cost === 0 ? "$0" : `$${cost < 0.01 ? cost.toFixed(4) : cost.toFixed(2)}`;
}

/** One line: how the last run ended, its time, tokens and cost (and where it failed). */
export function summaryText(s: RunSummary): string {
  const parts = [`last run ${s.status}`, fmtMs(s.elapsed_ms), `${s.tokens} tokens`, fmtCost(s.cost)];
  if (s.error_node) parts.push(`at ${s.error_node}`);
  return parts.join(" · ");
}

/** The status line: "running…" during a run, then how the run ended; the error is its
 * tooltip (the failed node's panel shows it whole). */
export function RunStatusLine({ model }: { model: AnyModel }) {
  const running = useTrait<boolean>(model, "running");
  const summary = useTrait<RunSummary | undefined>(model, "run_summary");
  if (running) {
    return <span className="cw-run-status cw-run-running" data-testid="cw-run-status">running…</span>;
  }
  if (!summary || !summary.status) {
    return <span className="cw-run-status" data-testid="cw-run-status">not run yet</span>;
  }
  const ok = summary.status === "succeeded" || summary.status === "partial-succeeded";
  const ended = summary.ended_at ? new Date(summary.ended_at * 1000).toLocaleTimeString() : "";
  return (
    <span
      className={`cw-run-status ${ok ? "cw-run-ok" : "cw-run-bad"}`}
      data-testid="cw-run-status"
      data-status={summary.status}
      title={[summary.error ?? "", ended ? `ended at ${ended}` : ""].filter(Boolean).join("\n")}
    >
      {summaryText(summary)}
    </span>
  );
}
