"""``%workflow kb ...``: the ``cellwire kb`` commands in a notebook, and a view of what a
search retrieved and why (each retriever's score, the chunk in its document)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

import click
from IPython.core.error import UsageError

from cellwire.services.knowledge import Hit, Knowledge, run_sync

from .display import Rendered


def kb_command(words: Sequence[str]) -> Any:
    """Run ``cellwire kb WORDS...``; ``search`` without ``--json`` returns a hits view."""
    from cellwire.cli.kb import kb

    words = list(words)
    if words[:1] == ["search"] and "--json" not in words:
        command = kb.commands["search"]
        try:
            params = command.make_context("%workflow kb search", words[1:]).params
        except click.ClickException as exc:
            raise UsageError(exc.format_message()) from None
        from cellwire.services.knowledge.rerank import RerankUnavailable, reranker_for

        base = Knowledge().get(params["name"])
        try:
            rerank = reranker_for(params["rerank"]) if params["rerank"] else None
        except RerankUnavailable as exc:
            raise UsageError(str(exc)) from None
        hits = run_sync(base.search(params["query"], mode=params["mode"],
                                    top_k=params["top_k"],
                                    score_threshold=params["score_threshold"],
                                    rerank=rerank))
        return hits_view(base.name, params["query"], hits)
    try:
        kb.main(args=words, prog_name="%workflow kb", standalone_mode=False)
    except click.ClickException as exc:
        raise UsageError(exc.format_message()) from None
    except SystemExit as exc:  # the command printed why
        if exc.code:
            raise UsageError(f"%workflow kb {' '.join(words[:1])} failed (see above)") from None
    return None


def _mark(text: str, query: str) -> str:
    words = sorted({w for w in re.findall(r"\w+", query.lower()) if len(w) > 2}, key=len,
                   reverse=True)
    escaped = html.escape(text)
    if not words:
        return escaped
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b",
                         re.IGNORECASE)
    return pattern.sub(lambda m: f"<mark>{m.group(0)}</mark>", escaped)


def hits_view(name: str, query: str, hits: Sequence[Hit]) -> Rendered:
    """A table of hits: rank, score, what each retriever gave, the document and position,
    and the chunk with the query's words marked (for parent-child bases, the parent with
    the children that matched)."""
    lines = [f"{name}: {len(hits)} hit(s) for {query!r}"]
    rows = []
    for rank, hit in enumerate(hits, 1):
        scores = ", ".join(f"{k} {v:.3f}" for k, v in hit.scores.items())
        lines.append(f"{rank}. {hit.score:.3f} {hit.document_name} #{hit.position} ({scores})")
        lines.append("   " + hit.content[:200].replace("\n", " "))
        children = "".join(
            f"<div style='margin-left:1em'>&#8627; child #{c['position']} "
            f"({c['score']:.3f}): {_mark(c['content'], query)}</div>"
            for c in hit.child_chunks)
        rows.append(
            f"<tr><td>{rank}</td><td><b>{hit.score:.3f}</b></td>"
            f"<td>{html.escape(scores)}</td>"
            f"<td title='{html.escape(hit.source)}'>{html.escape(hit.document_name)} "
            f"#{hit.position}</td>"
            f"<td style='text-align:left;white-space:pre-wrap'>{_mark(hit.content, query)}"
            f"{children}</td></tr>")
    table = ("<table><thead><tr><th>#</th><th>score</th><th>retrievers</th><th>document</th>"
             "<th>chunk</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    head = (f"<div><b>{html.escape(name)}</b>: {len(hits)} hit(s) for "
            f"<i>{html.escape(query)}</i></div>")
    return Rendered(head + table, "\n".join(lines))
