/** Run status per node, and whether the node is stale, outside React Flow's node list: a
 * status patch changes only the nodes and edges it names, never the whole graph. Patches are
 * merged and applied together, at an animation frame, at most once every ``UPDATE_MS``: a run
 * streams hundreds of messages a second, and every frame that changes the canvas pays a
 * style, layout, paint and layerize pass over the whole page (~15 ms of main-thread time for
 * 500 nodes, most of it whatever the number of nodes changed), so fewer such frames leave the
 * browser (and the kernel, on the same cores) time between them. Snapshots (the ``status``
 * trait, a run's start) and changes of the kernel's ``stale`` list (all 500 nodes of a big
 * graph lose their badge when its first run is recorded) go through the same updates, within
 * the same budget. */
import { useCallback, useSyncExternalStore } from "react";
import type { StatusEntry } from "./types";

type Listener = () => void;

/** Nodes recoloured per update at most: a burst (a layer of a wide graph finishing at once)
 * spreads over a few updates instead of making one long frame. */
export const NODES_PER_UPDATE = 40;
/** The shortest time between two updates of the canvas (20 a second): a colour changes at
 * the first frame after the change when nothing changed in the last ``UPDATE_MS``. */
export const UPDATE_MS = 50;
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
  private behind = new Map<string, Queued>();
  /** The nodes shown stale, and the flips of that flag still to show (behind the statuses:
   * the kernel sends a new list when a run ends, while its last colours are still queued). */
  private staleIds: Set<string>;
  private staleQueue = new Map<string, boolean>();
  private scheduled = false;
  /** When the last update was applied (``performance.now()``), and the least time between two. */
  private last = -Infinity;
  private interval: number;

  constructor(entries: Record<string, StatusEntry> = {}, stale: Iterable<string> = [], interval = UPDATE_MS) {
    this.interval = interval;
    this.entries = new Map(Object.entries(entries));
    this.staleIds = new Set(stale);
  }

  get(id: string): StatusEntry | undefined {
    return this.entries.get(id);
  }

  isStale(id: string): boolean {
    return this.staleIds.has(id);
  }

  /** Make ``ids`` the stale nodes; only the nodes whose flag flips change, at frames. */
  setStale(ids: Iterable<string>): void {
    const next = new Set(ids);
    this.staleQueue.clear();
    for (const id of this.staleIds) if (!next.has(id)) this.staleQueue.set(id, false);
    for (const id of next) if (!this.staleIds.has(id)) this.staleQueue.set(id, true);
    this.schedule();
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
    this.behind.clear();
    const next = new Map(Object.entries(entries));
    for (const [id, old] of this.entries) {
      const fresh = next.get(id);
      if (fresh === undefined) this.behind.set(id, { entry: null, fresh: true });
      else if (!sameEntry(old, fresh)) this.behind.set(id, { entry: fresh, fresh: true });
    }
    for (const [id, entry] of next) if (!this.entries.has(id)) this.behind.set(id, { entry, fresh: true });
    this.schedule();
  }

  /** Queue ``patch`` for the next frame. */
  patch(patch: Patch): void {
    const pending = this.pending;
    for (const [id, entry] of Object.entries(patch)) {
      let queued = pending.get(id);
      if (queued === undefined && this.behind.has(id)) {
        queued = this.behind.get(id);
        this.behind.delete(id);
      }
      if (entry === null) pending.set(id, { entry: null, fresh: true });
      else if (queued?.entry) {
        pending.set(id, { entry: merge(queued.entry, entry), fresh: queued.fresh || entry.status === "running" });
      } else pending.set(id, { entry, fresh: entry.status === "running" || queued !== undefined });
    }
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || (!this.pending.size && !this.behind.size && !this.staleQueue.size)) return;
    this.scheduled = true;
    const run = () =>
      nextFrame(() => {
        this.scheduled = false;
        this.last = performance.now();
        this.flush(NODES_PER_UPDATE);
      });
    const wait = this.last + this.interval - performance.now();
    if (wait > 0) setTimeout(run, wait);
    else run();
  }

  /** Apply queued changes now: those of the first ``limit`` nodes, patches in arrival order
   * before a snapshot's changes, stale flags last; the rest wait for the next frame. */
  flush(limit = Infinity): void {
    const done = new Set<string>();
    for (const queue of [this.pending, this.behind]) {
      for (const [id, { entry, fresh }] of queue) {
        if (done.size >= limit) break;
        if (entry === null) this.entries.delete(id);
        else this.entries.set(id, fresh ? entry : merge(this.entries.get(id), entry));
        done.add(id);
        queue.delete(id);
      }
    }
    for (const [id, stale] of this.staleQueue) {
      if (done.size >= limit) break;
      if (stale) this.staleIds.add(id);
      else this.staleIds.delete(id);
      done.add(id);
      this.staleQueue.delete(id);
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

/** The subscription is made once per node, not on every render: React re-subscribes when the
 * function changes. */
export function useStatus(store: StatusStore, id: string): StatusEntry | undefined {
  const subscribe = useCallback((cb: Listener) => store.subscribe(id, cb), [store, id]);
  return useSyncExternalStore(subscribe, () => store.get(id));
}
