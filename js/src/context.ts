import { createContext, useCallback, useContext, useSyncExternalStore } from "react";
import { StatusStore } from "./status";
import type { AnyModel } from "./types";

export type Editor = { store: StatusStore; send: (msg: Record<string, unknown>) => void; model: AnyModel };

const NO_MODEL: AnyModel = {
  get: () => undefined,
  set: () => {},
  save_changes: () => {},
  on: () => {},
  off: () => {},
  send: () => {},
};

export const EditorContext = createContext<Editor>({ store: new StatusStore(), send: () => {}, model: NO_MODEL });

export const useEditor = (): Editor => useContext(EditorContext);

/** A trait of the widget's model, re-rendering only the component that reads it. */
export function useTrait<T>(model: AnyModel, name: string): T {
  // One subscription per component, not one per render (Backbone's off is linear).
  const subscribe = useCallback(
    (cb: () => void) => {
      model.on(`change:${name}`, cb);
      return () => model.off(`change:${name}`, cb);
    },
    [model, name],
  );
  return useSyncExternalStore(subscribe, () => model.get(name) as T);
}
