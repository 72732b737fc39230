/** Run status per node, outside React Flow's node list: a status patch re-renders only the
 * nodes and edges it names, never the whole graph. Patches arriving within one frame are
 * merged and applied once, at the next animation frame: a run streams hundreds of messages a
 * second, and one React commit (and one style/layout/paint pass) per frame is all the screen
 * can show anyway. Snapshots (the ``status`` trait, a run's start) go through the same
 * frames. */
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

type Queued = { entry: StatusEntry | null; fresh: boolean };

export class StatusStore {
  private entries = new Map<string, StatusEntry>();
  private listeners = new Map<string, Set<Listener>>();
  private all = new Set<Listener>();
  private version = 0;
  /** Queued changes; ``fresh`` when the queued entry replaces the old one instead of merging
   * into it (the node started again since the last frame, or a snapshot set it). */
  private pending = new Map<string, Queued>();
  /** What a snapshot changes, behind ``pending``: the news of a run first, then the rest. */
  private stale = new Map<string, Queued>();
  private scheduled = false;

  constructor(entries: Record<string, StatusEntry> = {}) {
    this.entries = new Map(Object.entries(entries));
  }

  get(id: string): StatusEntry | undefined {
    return this.entries.get(id);
  }

  getVersion(): number {
    return this.version;
  }

  /** Make the entries those of ``entries`` (a run starts, or a snapshot arrives). Queued
   * patches are dropped: they describe the state being replaced. Only the entries that
   * differ change, at frames like patches: a run's end or the start of the next one would
   * otherwise recolour every node of a big graph in one long frame. */
  reset(entries: Record<string, StatusEntry> = {}): void {
    this.pending.clear();
    this.stale.clear();
    const next = new Map(Object.entries(entries));
    for (const [id, old] of this.entries) {
      const fresh = next.get(id);
      if (fresh === undefined) this.stale.set(id, { entry: null, fresh: true });
      else if (!sameEntry(old, fresh)) this.stale.set(id, { entry: fresh, fresh: true });
    }
    for (const [id, entry] of next) if (!this.entries.has(id)) this.stale.set(id, { entry, fresh: true });
    this.schedule();
  }

  /** Queue ``patch`` for the next frame. */
  patch(patch: Patch): void {
    const pending = this.pending;
    for (const [id, entry] of Object.entries(patch)) {
      let queued = pending.get(id);
      if (queued === undefined && this.stale.has(id)) {
        queued = this.stale.get(id);
        this.stale.delete(id);
      }
      if (entry === null) pending.set(id, { entry: null, fresh: true });
      else if (queued?.entry) {
        pending.set(id, { entry: merge(queued.entry, entry), fresh: queued.fresh || entry.status === "running" });
      } else pending.set(id, { entry, fresh: entry.status === "running" || queued !== undefined });
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || (!this.pending.size && !this.stale.size)) return;
    this.scheduled = true;
    nextFrame(() => {
      this.scheduled = false;
      this.flush(NODES_PER_FRAME);
    });
  }

  /** Apply queued changes now: those of the first ``limit`` nodes, patches in arrival order
   * before a snapshot's changes; the rest wait for the next frame. */
  flush(limit = Infinity): void {
    const done = new Set<string>();
    for (const queue of [this.pending, this.stale]) {
      for (const [id, { entry, fresh }] of queue) {
        if (done.size >= limit) break;
        if (entry === null) this.entries.delete(id);
        else this.entries.set(id, fresh ? entry : merge(this.entries.get(id), entry));
        done.add(id);
        queue.delete(id);
      }
    }
    this.schedule();
    if (done.size) this.notify(done);
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
