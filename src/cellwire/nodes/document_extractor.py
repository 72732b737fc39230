"""document-extractor: the text of a file, or of each file of a list, Dify's fields.

``variable_selector`` points at a file variable (a Dify file object, a URL or a local path)
or a list of them; the output ``text`` is a string, or a list of strings for a list. Text
comes out as Dify's extractor gives it (:mod:`cellwire.services.knowledge.extract`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type
from cellwire.services.files import NoLocalFiles
from cellwire.services.files.objects import FileReadError, describe, read_file
from cellwire.services.knowledge.extract import ExtractionError, extract_text


class DocumentExtractorConfig(NodeConfig):
    variable_selector: list[str] = Field(default_factory=list)
    is_array_file: bool = False


@node_type("document-extractor", config=DocumentExtractorConfig, outputs=("text",))
async def run(ctx: NodeContext) -> NodeResult:
    """Extract the text of the file(s) at ``variable_selector``; output ``text``."""
    config: DocumentExtractorConfig = ctx.config
    if len(config.variable_selector) < 2:
        raise NodeError("no file variable is selected", field="variable_selector",
                        hint="select a file or file-list variable, e.g. ['start', 'doc']")
    value = ctx.get(config.variable_selector, field="variable_selector")
    documents = value if isinstance(value, list) else [] if value is None else [value]
    texts = [await _text(ctx, item, index if isinstance(value, list) else None)
             for index, item in enumerate(documents)]
    inputs = {"variable_selector": config.variable_selector}
    process = {"documents": [describe(item) for item in documents]}
    text: Any = texts if isinstance(value, list) else (texts[0] if texts else "")
    return NodeResult(inputs=inputs, outputs={"text": text}, process_data=process)


async def _text(ctx: NodeContext, item: Any, index: int | None) -> str:
    field = "variable_selector" if index is None else f"variable_selector[{index}]"
    runtime = ctx.runtime
    try:
        data, name, mime = await read_file(item, files=runtime.files or NoLocalFiles(),
                                           http=runtime.http, network=runtime.network)
        return await ctx.to_thread(extract_text, data, name, mime)
    except (FileReadError, ExtractionError) as exc:
        raise NodeError(str(exc), field=field,
                        hint="give a readable file of a supported type (txt, md, html, csv, "
                             "json, yaml, pdf, docx, pptx, xlsx)") from None
