/** Run status per node, outside React Flow's node list: a status patch re-renders only the
 * nodes and edges it names, never the whole graph. */
import { useSyncExternalStore } from "react";
import type { StatusEntry } from "./types";

type Listener = () => void;

export class StatusStore {
  private entries = new Map<string, StatusEntry>();
  private listeners = new Map<string, Set<Listener>>();
  private all = new Set<Listener>();
  private version = 0;

  get(id: string): StatusEntry | undefined {
    return this.entries.get(id);
  }

  getVersion(): number {
    return this.version;
  }

  reset(entries: Record<string, StatusEntry> = {}): void {
    const touched = new Set([...this.entries.keys(), ...Object.keys(entries)]);
    this.entries = new Map(Object.entries(entries));
    this.notify(touched);
  }

  patch(patch: Record<string, StatusEntry | null>): void {
    for (const [id, entry] of Object.entries(patch)) {
      if (entry === null) this.entries.delete(id);
      else if (entry.status === "running") this.entries.set(id, entry);
      else this.entries.set(id, { ...(this.entries.get(id) ?? {}), ...entry });
    }
    this.notify(new Set(Object.keys(patch)));
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

export function useStatus(store: StatusStore, id: string): StatusEntry | undefined {
  return useSyncExternalStore(
    (cb) => store.subscribe(id, cb),
    () => store.get(id),
  );
}

export function useStatusVersion(store: StatusStore): number {
  return useSyncExternalStore(
    (cb) => store.subscribeAll(cb),
    () => store.getVersion(),
  );
}
