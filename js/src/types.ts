/** The shapes the kernel sends (see cellwire/jupyter/widget_protocol.py). */

export type Position = { x: number; y: number };

export type CwNode = {
  id: string;
  type: string;
  title: string;
  parent: string | null;
  position: Position | null;
  config: Record<string, unknown>;
  error_strategy: string;
  handles: string[];
  container: boolean;
  summary: string;
  /** A tool or agent node's tools, bound as a run would bind them. */
  tools?: NodeTool[];
};

/** A tool a node names: the registered tool it binds to, or why none does and the fix. */
export type NodeTool = {
  name: string;
  provider: string;
  field: string;
  bound: string | null;
  kind?: string;
  description?: string;
  arguments?: string[];
  problem?: string;
  fix?: string;
};

export type CwEdge = { id: string; source: string; target: string; source_handle: string };

/** The kernel's `trust` trait: whether the workflow is trusted and where its code runs. */
export type TrustInfo = { trusted: boolean; origin: string | null; code_nodes: string[]; text: string };

export type Problem = {
  node_id: string | null;
  field: string | null;
  message: string;
  hint: string;
  level: "error" | "warning";
};

export type NodeTypeInfo = {
  name: string;
  description: string;
  container: boolean;
  start: boolean;
  schema: JsonSchema;
  /** What a node of this type needs to run that this install lacks; null when it runs. */
  needs?: string | null;
};

/** How the last run ended (the kernel's ``run_summary`` trait). */
export type RunSummary = {
  run_id: string;
  status: string;
  elapsed_ms: number;
  tokens: number;
  cost: number | null;
  error: string | null;
  error_node: string | null;
  ended_at: number | null;
};

/** One input a start node declares (its ``variables``). */
export type StartVariable = {
  variable: string;
  label?: string;
  type?: string;
  required?: boolean;
  default?: unknown;
  options?: string[];
};

export type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  enum?: unknown[];
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  title?: string;
  description?: string;
  default?: unknown;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
};

export type Status = "pending" | "running" | "succeeded" | "failed" | "skipped" | "paused" | "cached";

/** What a human-input node asks while its run is paused (``Form.to_dict()`` in Python). */
export type HumanForm = {
  run_id: string;
  node_id: string;
  title: string;
  content: string;
  fields: { name: string; type: string; default: unknown; options: string[] | null }[];
  actions: { id: string; title: string; button_style: string }[];
  expires_at: number | null;
};

export type StatusEntry = {
  status: Status;
  form?: HumanForm;
  elapsed?: number;
  tokens?: number;
  cost?: number;
  error?: string;
  handled?: boolean;
  inputs?: Record<string, string>;
  outputs?: Record<string, string>;
  /** An agent's model and tool calls, in the order they ended. */
  steps?: StepEntry[];
};

/** One model or tool call of a node (an agent's). */
export type StepEntry = {
  step: number;
  type: string;
  title: string;
  status: string;
  elapsed?: number;
  tokens?: number;
  output?: string;
  error?: string;
};

/** The part of anywidget's model the editor uses (works in JupyterLab, Notebook 7, VS Code, marimo). */
export interface AnyModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string | null, cb?: ((...args: any[]) => void) | null): void;
  send(content: unknown, callbacks?: unknown, buffers?: unknown[]): void;
}
