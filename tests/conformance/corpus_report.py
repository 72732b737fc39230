"""Where the Dify DSL corpus is, and what the conformance tests found in it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

#: The corpus sits in ``shared/`` beside the repository (CI clones it there).
CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpora" / "dify-dsl"

#: collection -> file -> {"imported" | "rejected" | "runnable": bool}
REPORT: dict[str, dict[str, dict[str, bool]]] = defaultdict(lambda: defaultdict(dict))


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(CORPUS.glob("*/*.yml"))


def record(path: Path, **facts: bool) -> None:
    REPORT[path.parent.name][path.name].update(facts)
