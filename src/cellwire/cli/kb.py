"""``cellwire kb``: knowledge bases in the project's home folder (``<home>/knowledge``).

``create NAME [--embedding MODEL]``, ``add NAME FILE...``, ``search NAME QUERY [--mode]
[--top-k] [--rerank MODEL] [--json]``, ``list``, ``describe NAME``, ``bind NAME DATASET_ID``, ``drop NAME``.
Exit codes: 0 done, 1 the knowledge base or a file could not be used, 2 bad command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cellwire.cli.app import cli
from cellwire.cli.common import EXIT_FAILED, fail


def _knowledge() -> Any:
    from cellwire.services.knowledge import Knowledge

    return Knowledge()


def _base(name: str) -> Any:
    from cellwire.services.knowledge import KnowledgeBaseNotFound

    try:
        return _knowledge().get(name)
    except KnowledgeBaseNotFound as exc:
        fail([f"error: {exc}"], EXIT_FAILED)


@cli.group("kb")
def kb() -> None:
    """Knowledge bases: create, add files, search, list, drop."""


@kb.command("create")
@click.argument("name")
@click.option("--embedding", metavar="MODEL", default=None,
              help="provider/model of an embedding endpoint, or 'hash' (no model); "
                   "without it the base has full-text search only")
@click.option("--chunking", type=click.Choice(["automatic", "custom", "hierarchical"]),
              default="automatic", show_default=True, help="Dify's chunk mode")
@click.option("--separator", default="\\n\\n", show_default=True,
              help="custom/hierarchical: the separator parents are split at")
@click.option("--max-length", type=int, default=500, show_default=True,
              help="custom/hierarchical: longest chunk (parent), in characters")
@click.option("--overlap", type=int, default=50, show_default=True,
              help="custom: characters shared by neighbouring chunks")
@click.option("--parent-mode", type=click.Choice(["paragraph", "full-doc"]),
              default="paragraph", show_default=True, help="hierarchical: parents are")
@click.option("--child-max-length", type=int, default=200, show_default=True,
              help="hierarchical: longest child chunk")
@click.option("--id", "kb_id", default=None, help="the id to give it (e.g. a Dify dataset id)")
@click.option("--description", default="",
              help="what it holds: single retrieval shows it to the model that picks a base")
def create(name: str, embedding: str | None, chunking: str, separator: str, max_length: int,
           overlap: int, parent_mode: str, child_max_length: int, kb_id: str | None,
           description: str) -> None:
    """Create the knowledge base NAME."""
    from pydantic import ValidationError

    from cellwire.services.knowledge import ChunkRule, EmbeddingUnavailable

    try:
        rule = ChunkRule.model_validate({
            "mode": chunking, "parent_mode": parent_mode,
            "segmentation": {"separator": separator, "max_tokens": max_length,
                             "chunk_overlap": overlap if chunking == "custom" else 0},
            "subchunk_segmentation": {"separator": "\\n", "max_tokens": child_max_length,
                                      "chunk_overlap": 0}})
        base = _knowledge().create(name, embedding=embedding, rule=rule, id=kb_id,
                                   description=description)
    except ValidationError as exc:
        fail([f"error: {e['msg']} ({'.'.join(map(str, e['loc']))})" for e in exc.errors()])
    except (ValueError, FileExistsError, EmbeddingUnavailable) as exc:
        fail([f"error: {exc}"])
    click.echo(f"created knowledge base {base.name} (id {base.id}, "
               f"{'embedding ' + embedding if embedding else 'full-text only'})")


@kb.command("add")
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False,
                                                                  path_type=Path))
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE",
              help="metadata for the documents (repeatable), for metadata filters")
@click.option("--quiet", is_flag=True, help="no progress bar")
def add(name: str, files: tuple[Path, ...], meta: tuple[str, ...], quiet: bool) -> None:
    """Add FILES to the knowledge base NAME (a changed file replaces its chunks; an
    unchanged one is skipped)."""
    from cellwire.services.knowledge import EmbeddingUnavailable, ExtractionError
    from cellwire.services.knowledge.base import run_sync

    metadata: dict[str, Any] = {}
    for pair in meta:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        metadata[key] = value
    base = _base(name)
    try:
        report = run_sync(base.add_files(files, metadata=metadata, progress=not quiet))
    except (ExtractionError, EmbeddingUnavailable, OSError, RuntimeError) as exc:
        fail([f"error: {exc}"], EXIT_FAILED)
    click.echo(f"{base.name}: {len(report.added)} added, {len(report.replaced)} replaced, "
               f"{len(report.skipped)} unchanged; {report.chunks} chunks written, "
               f"{report.embedded} embedded")


@kb.command("search")
@click.argument("name")
@click.argument("query")
@click.option("--mode", type=click.Choice(["fulltext", "vector", "hybrid"]), default=None,
              help="default: hybrid with an embedding model, else fulltext")
@click.option("--top-k", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--score-threshold", type=float, default=None)
@click.option("--rerank", metavar="PROVIDER/MODEL", default=None,
              help="re-score the candidates with this rerank model (a provider's /rerank)")
@click.option("--json", "as_json", is_flag=True,
              help="print a JSON list of hits (content, score, source, ...)")
def search(name: str, query: str, mode: str | None, top_k: int,
           score_threshold: float | None, rerank: str | None, as_json: bool) -> None:
    """Search the knowledge base NAME for QUERY."""
    from cellwire.services.knowledge import EmbeddingUnavailable, hits_as_json
    from cellwire.services.knowledge.base import run_sync
    from cellwire.services.knowledge.rerank import reranker_for
    from cellwire.services.llm import ProviderError

    base = _base(name)
    try:
        reranker = reranker_for(rerank) if rerank else None
        hits = run_sync(base.search(query, mode=mode, top_k=top_k,
                                    score_threshold=score_threshold, rerank=reranker))
    except (ValueError, EmbeddingUnavailable, RuntimeError, ProviderError) as exc:
        fail([f"error: {exc}"], EXIT_FAILED)
    if as_json:
        click.echo(json.dumps(hits_as_json(hits), ensure_ascii=False, indent=2))
        return
    if not hits:
        click.echo("no hits")
    for rank, hit in enumerate(hits, 1):
        scores = ", ".join(f"{k} {v:.3f}" for k, v in hit.scores.items())
        click.echo(f"{rank}. {hit.score:.3f}  {hit.document_name} #{hit.position}  ({scores})")
        click.echo("   " + hit.content[:300].replace("\n", "\n   "))


@kb.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """List the knowledge bases."""
    described = [base.describe() for base in _knowledge().list()]
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    if not described:
        click.echo("no knowledge bases (cellwire kb create NAME)")
    for d in described:
        click.echo(f"{d['name']}\t{d['id']}\t{d['documents']} documents\t{d['chunks']} chunks"
                   f"\t{d['embedding'] or 'full-text only'}")


@kb.command("describe")
@click.argument("name")
def describe(name: str) -> None:
    """Show the knowledge base NAME and its documents, as JSON."""
    base = _base(name)
    click.echo(json.dumps({**base.describe(), "documents": [
        {k: d[k] for k in ("name", "source", "chunks", "metadata")}
        for d in base.documents()]}, indent=2, default=str))


@kb.command("bind")
@click.argument("name")
@click.argument("dataset_id")
def bind(name: str, dataset_id: str) -> None:
    """Let workflows reach NAME by DATASET_ID (e.g. the id an imported Dify app names)."""
    _base(name)
    _knowledge().bind(name, dataset_id)
    click.echo(f"{name}: bound to {dataset_id}")


@kb.command("drop")
@click.argument("name")
def drop(name: str) -> None:
    """Delete the knowledge base NAME."""
    from cellwire.services.knowledge import KnowledgeBaseNotFound

    try:
        _knowledge().drop(name)
    except KnowledgeBaseNotFound as exc:
        fail([f"error: {exc}"], EXIT_FAILED)
    click.echo(f"dropped {name}")
