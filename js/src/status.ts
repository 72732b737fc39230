/** Run status per node, outside React Flow's node list: a status patch re-renders only the
 * nodes and edges it names, never the whole graph. Patches arriving within one frame are
 * merged and applied once, at the next animation frame: a run streams hundreds of messages a
 * second, and one React commit (and one style/layout/paint pass) per frame is all the screen
 * can show anyway. */
import { useSyncExternalStore } from "react";
import type { StatusEntry } from "./types";

type Listener = () => void;

/** Nodes recoloured per frame at most: a burst (a layer of a wide graph finishing at once)
 * spreads over a few frames instead of making one long one. */
export const NODES_PER_FRAME = 24;
type Patch = Record<string, StatusEntry | null>;

/** Merge one node's change into its entry; "running" starts the node afresh. */
function merge(old: StatusEntry | undefined, entry: StatusEntry): StatusEntry {
  return entry.status === "running" ? entry : { ...(old ?? {}), ...entry };
}

/** The next frame, or a short timer where there are no frames (a hidden tab still updates). */
function nextFrame(cb: () => void): void {
  if (typeof requestAnimationFrame === "undefined" || document.visibilityState === "hidden") {
    setTimeout(cb, 16);
    return;
  }
  let done = false;
  const once = () => {
    if (!done) {
      done = true;
      cb();
    }
  };
  requestAnimationFrame(once);
  setTimeout(once, 100); // rAF stalls in background tabs and some embedders
}

export class StatusStore {
  private entries = new Map<string, StatusEntry>();
  private listeners = new Map<string, Set<Listener>>();
  private all = new Set<Listener>();
  private version = 0;
  /** Queued changes; ``fresh`` when the node started again since the last frame, so the
   * queued entry replaces the old one instead of merging into it. */
  private pending: Map<string, { entry: StatusEntry | null; fresh: boolean }> | null = null;

  get(id: string): StatusEntry | undefined {
    return this.entries.get(id);
  }

  getVersion(): number {
    return this.version;
  }

  /** Replace every entry now (a run starts, or a snapshot arrives); pending patches are
   * dropped: they describe the state being replaced. Unchanged entries keep their identity,
   * so nodes whose status is the same do not re-render. */
  reset(entries: Record<string, StatusEntry> = {}): void {
    this.pending = null;
    const next = new Map(Object.entries(entries));
    const touched = new Set<string>();
    for (const [id, old] of this.entries) {
      const fresh = next.get(id);
      if (fresh === undefined) touched.add(id);
      else if (sameEntry(old, fresh)) next.set(id, old);
      else touched.add(id);
    }
    for (const id of next.keys()) if (!this.entries.has(id)) touched.add(id);
    this.entries = next;
    if (touched.size) this.notify(touched);
  }

  /** Queue ``patch`` for the next frame. */
  patch(patch: Patch): void {
    const first = this.pending === null;
    const pending = (this.pending ??= new Map());
    for (const [id, entry] of Object.entries(patch)) {
      const queued = pending.get(id);
      if (entry === null) pending.set(id, { entry: null, fresh: true });
      else if (queued?.entry) {
        pending.set(id, { entry: merge(queued.entry, entry), fresh: queued.fresh || entry.status === "running" });
      } else pending.set(id, { entry, fresh: entry.status === "running" || queued !== undefined });
    }
    if (first) nextFrame(() => this.flush(NODES_PER_FRAME));
  }

  /** Apply queued patches now: those of the first ``limit`` nodes, in arrival order; the
   * rest wait for the next frame. */
  flush(limit = Infinity): void {
    const pending = this.pending;
    if (!pending || !pending.size) return;
    const done = new Set<string>();
    for (const [id, { entry, fresh }] of pending) {
      if (done.size >= limit) break;
      if (entry === null) this.entries.delete(id);
      else this.entries.set(id, fresh ? entry : merge(this.entries.get(id), entry));
      done.add(id);
    }
    for (const id of done) pending.delete(id);
    if (!pending.size) this.pending = null;
    else nextFrame(() => this.flush(NODES_PER_FRAME));
    this.notify(done);
  }

  subscribe(id: string, cb: Listener): () => void {
    let set = this.listeners.get(id);
    if (!set) this.listeners.set(id, (set = new Set()));
    set.add(cb);
    return () => set!.delete(cb);
  }

  subscribeAll(cb: Listener): () => void {
    this.all.add(cb);
    return () => this.all.delete(cb);
  }

  private notify(ids: Set<string>): void {
    this.version++;
    for (const id of ids) this.listeners.get(id)?.forEach((cb) => cb());
    this.all.forEach((cb) => cb());
  }
}

function sameEntry(a: StatusEntry, b: StatusEntry): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function useStatus(store: StatusStore, id: string): StatusEntry | undefined {
  return useSyncExternalStore(
    (cb) => store.subscribe(id, cb),
    () => store.get(id),
  );
}
