/** The anywidget front-end module of cellwire's workflow editor. */
import { createRender, useModel } from "@anywidget/react";
import "@xyflow/react/dist/style.css";
import "./widget.css";
import { App } from "./app";
import type { AnyModel } from "./types";

function Root() {
  return <App model={useModel() as unknown as AnyModel} />;
}

export default { render: createRender(Root) };
