import { createContext, useContext } from "react";
import { StatusStore } from "./status";

export type Editor = { store: StatusStore; send: (msg: Record<string, unknown>) => void };

export const EditorContext = createContext<Editor>({ store: new StatusStore(), send: () => {} });

export const useEditor = (): Editor => useContext(EditorContext);
