"""BM25 full-text search in process: an inverted index of the chunks, kept beside their table.

Words are cut and normalised as LanceDB's full-text index does by default (its ``FTS()``:
the simple tokenizer, tokens over 40 characters dropped, lower case, English stop words
removed, English stemming, accents folded to ASCII; Tantivy's analyzer does the cutting), and
a query matches the chunks that hold any of its words, scored by BM25 (k1 1.2, b 0.75), as
``nearest_to_text`` does.

Why not a Tantivy index: its Python binding collects every search through a
``MultiCollector``, which turns off Tantivy's block-max WAND, so a query scores every chunk
that holds any of its words. A word in most chunks (the commonest words of a corpus, which
stop-word lists miss) then costs 1-1.7 ms at 100,000 chunks. Here each word's BM25 impact on
each chunk is computed once, when the index opens, the commonest words' as dense arrays (added whole, at
memory speed); a query adds its words' impacts and takes the best of the chunks that can
still make the top ``limit``, all in NumPy.

The folder holds each chunk's key (:func:`.sideindex.chunk_key`), document id, and words with
their counts; the postings are derived from them when the index opens.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

K1, B = 1.2, 0.75
#: Words in at least this share of the chunks keep their impacts as one dense array ...
DENSE_SHARE = 1 / 32
#: ... as long as all such arrays fit in this many bytes (the commonest words first).
DENSE_BYTES = 64 * 2**20
#: Chunks sampled for a first bound on the ``limit``-th best score.
SAMPLE = 2048
_FILES = ("keys.npy", "ptr.npy", "terms.npy", "counts.npy", "documents.json", "vocabulary.json")


def _analyzer() -> Any:
    import tantivy

    return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stopword("english"))
            .filter(tantivy.Filter.stemmer("english"))
            .filter(tantivy.Filter.ascii_fold())
            .build())


class TextIndex:
    """The BM25 index in ``path`` (a folder), empty if it holds none."""

    def __init__(self, path: Path):
        import numpy as np

        self.path = path
        self._analyzer = _analyzer()
        # Per chunk (a row): its key, and its words as a run of ``terms`` (ids into
        # ``vocabulary``) with their ``counts``, from ``ptr[row]`` to ``ptr[row + 1]``. Only
        # deriving the postings and writing read the runs (and the chunks' documents), so they
        # stay on disk, mapped.
        self._keys = np.empty(0, dtype=np.uint64)
        self._ptr = np.zeros(1, dtype=np.int64)
        self._terms = np.empty(0, dtype=np.int32)
        self._counts = np.empty(0, dtype=np.int32)
        self._vocabulary: list[str] = []
        if (path / "keys.npy").exists():
            self._keys = np.load(path / "keys.npy")
            self._ptr = np.load(path / "ptr.npy", mmap_mode="r")
            self._terms = np.load(path / "terms.npy", mmap_mode="r")
            self._counts = np.load(path / "counts.npy", mmap_mode="r")
            self._vocabulary = json.loads((path / "vocabulary.json").read_text("utf-8"))
            if not (len(self._keys) == len(self._ptr) - 1
                    and len(self._terms) == len(self._counts) == int(self._ptr[-1])):
                raise ValueError(f"{path}: the chunks' files do not match")
        self._ids = {word: i for i, word in enumerate(self._vocabulary)}
        self._prepared = False

    def prepare(self) -> None:
        """Derive the postings now (else the first search does): 0.4 s at 100,000 chunks."""
        if not self._prepared:
            self._postings()
            self._prepared = True

    def __len__(self) -> int:
        return len(self._keys)

    def _postings(self) -> None:
        """Each word's chunks and the BM25 impacts on them, from the chunks' words."""
        import numpy as np

        size = len(self._keys)
        owner = np.repeat(np.arange(size, dtype=np.int32), np.diff(self._ptr))  # each run's row
        words = np.bincount(owner, weights=self._counts, minlength=size).astype(np.float32)
        order = np.argsort(self._terms, kind="stable")  # each word's chunks in row order
        self._rows = owner[order]
        counts = self._counts[order].astype(np.float32)
        self._starts = np.searchsorted(self._terms[order],
                                       np.arange(len(self._vocabulary) + 1)).astype(np.int64)
        frequency = np.diff(self._starts)
        # BM25 as Lucene and Tantivy score it: idf * (k1 + 1) * tf / (tf + k1 * (1 - b + b *
        # length / mean length)).
        idf = np.log1p((size - frequency + 0.5) / (frequency + 0.5)).astype(np.float32)
        norm = K1 * (1 - B + B * words / max(float(words.mean()) if size else 1.0, 1e-9))
        self._impacts = (np.repeat(idf * (K1 + 1), frequency) * counts
                         / (counts + norm[self._rows])).astype(np.float32)
        self._dense: dict[int, np.ndarray] = {}
        common = np.flatnonzero(frequency >= max(1.0, size * DENSE_SHARE))
        for term in common[np.argsort(-frequency[common], kind="stable")].tolist():
            if (len(self._dense) + 1) * size * 4 > DENSE_BYTES:
                break
            dense = np.zeros(size, dtype=np.float32)
            span = slice(self._starts[term], self._starts[term + 1])
            dense[self._rows[span]] = self._impacts[span]
            self._dense[term] = dense

    def update(self, drop_documents: Sequence[str], keys: Sequence[int],
               document_ids: Sequence[str], texts: Sequence[str]) -> None:
        """Delete the chunks of ``drop_documents``, add the given chunks, and write the
        files anew (each atomically)."""
        import numpy as np

        documents: list[str] = []
        if len(self._keys):
            documents = json.loads((self.path / "documents.json").read_text("utf-8"))
            if len(documents) != len(self._keys):
                raise ValueError(f"{self.path}: the chunks' files do not match")
        keep = np.ones(len(self._keys), dtype=bool)
        if drop_documents:
            dropped = set(drop_documents)
            keep = np.fromiter((d not in dropped for d in documents), dtype=bool,
                               count=len(documents))
        lengths = np.diff(self._ptr)
        kept_words = np.repeat(keep, lengths)
        new_terms: list[int] = []
        new_counts: list[int] = []
        new_lengths: list[int] = []
        ids = self._ids
        for text in texts:
            counted = Counter(self._analyzer.analyze(text))
            for word, count in counted.items():
                new_terms.append(ids.setdefault(word, len(ids)))
                new_counts.append(count)
            new_lengths.append(len(counted))
        self._vocabulary = list(ids)
        self._keys = np.concatenate([self._keys[keep], np.asarray(keys, dtype=np.uint64)])
        documents = [d for d, k in zip(documents, keep.tolist(), strict=True) if k]
        documents += document_ids
        self._ptr = np.concatenate([[0], np.cumsum(np.concatenate(
            [lengths[keep], np.asarray(new_lengths, dtype=np.int64)]))]).astype(np.int64)
        self._terms = np.concatenate([self._terms[kept_words],
                                      np.asarray(new_terms, dtype=np.int32)])
        self._counts = np.concatenate([self._counts[kept_words],
                                       np.asarray(new_counts, dtype=np.int32)])
        self._prepared = False
        self.path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"keys.npy": self._keys, "ptr.npy": self._ptr,
                                         "terms.npy": self._terms, "counts.npy": self._counts}
        for name, array in arrays.items():
            with (self.path / f"{name}.tmp").open("wb") as out:
                np.save(out, array)
        for name, value in (("documents.json", documents),
                            ("vocabulary.json", self._vocabulary)):
            (self.path / f"{name}.tmp").write_text(json.dumps(value, ensure_ascii=False),
                                                   "utf-8")
        for name in _FILES:
            (self.path / f"{name}.tmp").replace(self.path / name)

    def search(self, query: str, limit: int) -> list[tuple[int, float]]:
        """The ``limit`` best chunks for ``query``: (key, BM25 score), best first."""
        import numpy as np

        self.prepare()
        ids = self._ids
        terms = list(dict.fromkeys(ids[w] for w in self._analyzer.analyze(query) if w in ids))
        terms = [t for t in terms if self._starts[t + 1] > self._starts[t]]
        if not terms or limit <= 0:
            return []
        dense = [self._dense[t] for t in terms if t in self._dense]
        spans = [slice(self._starts[t], self._starts[t + 1]) for t in terms
                 if t not in self._dense]
        scores = dense[0].copy() if dense else np.zeros(len(self._keys), dtype=np.float32)
        for more in dense[1:]:
            scores += more
        for span in spans:
            scores[self._rows[span]] += self._impacts[span]
        # A lower bound of the ``limit``-th best score: that of any ``limit`` chunks (a
        # sample, each sparse word's); every chunk at or above it is a candidate.
        bound = _kth(scores[::max(1, len(scores) // SAMPLE)], limit) if dense else 0.0
        for span in spans:
            bound = max(bound, _kth(scores[self._rows[span]], limit))
        if dense:
            rows = np.flatnonzero(scores >= bound) if bound > 0 else np.flatnonzero(scores)
        else:  # only the sparse words' chunks score: no pass over every chunk
            held = np.concatenate([self._rows[span] for span in spans])
            rows = np.unique(held[scores[held] >= bound])
        best = scores[rows]
        if len(rows) > limit:
            top = np.argpartition(-best, limit - 1)[:limit]
            top.sort()  # row order breaks ties
            rows, best = rows[top], best[top]
        order = np.argsort(-best, kind="stable")
        return list(zip(self._keys[rows[order]].tolist(), best[order].tolist(), strict=True))


def _kth(values: np.ndarray, k: int) -> float:
    """The ``k``-th largest of ``values`` (0 when there are fewer)."""
    import numpy as np

    if len(values) < k:
        return 0.0
    return float(np.partition(values, len(values) - k)[len(values) - k])
