"""Nearest chunks by cosine in process: one bit per dimension to find candidates, the full
vectors to rank them.

The chunks' vectors are kept, normalised, in ``vectors.npy`` (single precision, memory-mapped)
beside their keys in ``keys.npy``; in memory each vector is also reduced to the signs of its
components, 48 bytes for 384 dimensions. A search compares the query's signs with every
chunk's (the Hamming distance, which grows with the angle between them: 32 times less to read
than the vectors), keeps the :func:`candidates` closest, and ranks those by their exact cosine.
Bases of up to four times that many chunks are searched exactly.

Why not a graph (HNSW): on ``benchmarks/knowledge.py``'s corpus a USearch HNSW graph (16-32
neighbours, beams of 64-256) found only 0.67-0.81 of the ten nearest chunks at 30,000 chunks,
where the signs with 1,000 candidates ranked exactly find 0.97-0.98 of them (see
docs/knowledge.md, "Measured").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: Candidates ranked exactly, at the least.
MIN_CANDIDATES = 1_000


def candidates(limit: int, size: int) -> int:
    """How many chunks of ``size`` are ranked by their exact cosine for a search of
    ``limit``: all of them up to four times :data:`MIN_CANDIDATES`, else
    ``max(MIN_CANDIDATES, 50 * limit, size // 100)``."""
    wanted = max(MIN_CANDIDATES, 50 * limit, size // 100)
    return size if size <= 4 * wanted else wanted


def _signs(vectors: np.ndarray) -> np.ndarray:
    """Each vector's signs as 64-bit words, word-major ((words, n)): a word of all the
    vectors is contiguous, so a search runs over whole columns."""
    import numpy as np

    packed = np.packbits(vectors > 0, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed.view(np.uint64).T)


class VectorIndex:
    """The vectors in folder ``path``, ``dims`` long each."""

    def __init__(self, path: Path, dims: int):
        import numpy as np

        self.path = path
        self.dims = dims
        self._keys = np.empty(0, dtype=np.uint64)
        self._vectors = np.empty((0, dims), dtype=np.float32)
        if (path / "keys.npy").exists():
            self._keys = np.load(path / "keys.npy")
            self._vectors = np.load(path / "vectors.npy", mmap_mode="r")
            if self._vectors.shape != (len(self._keys), dims):
                raise ValueError(f"{path}: vectors of shape {self._vectors.shape}, not "
                                 f"({len(self._keys)}, {dims})")
        self._signs = _signs(np.asarray(self._vectors))

    def __len__(self) -> int:
        return len(self._keys)

    def update(self, drop: np.ndarray, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Remove the vectors of keys ``drop``, add ``vectors`` under ``keys``, and write
        the files anew (each atomically)."""
        import numpy as np

        keep = ~np.isin(self._keys, drop) if len(drop) else np.ones(len(self._keys), bool)
        fresh = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dims)
        fresh = fresh / np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-12)
        all_keys = np.concatenate([self._keys[keep], np.asarray(keys, dtype=np.uint64)])
        all_vectors = np.concatenate([np.asarray(self._vectors)[keep], fresh])
        self.path.mkdir(parents=True, exist_ok=True)
        for name, array in (("vectors.npy", all_vectors), ("keys.npy", all_keys)):
            tmp = self.path / f"{name}.tmp"
            with tmp.open("wb") as out:
                np.save(out, array)
            tmp.replace(self.path / name)
        self._keys = all_keys
        self._vectors = np.load(self.path / "vectors.npy", mmap_mode="r")
        self._signs = _signs(all_vectors)

    def search(self, vector: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The keys of the ``limit`` nearest vectors and their cosine distances, nearest
        first."""
        import numpy as np

        size = len(self._keys)
        if not size or limit <= 0:
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.float32)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        count = candidates(limit, size)
        if count >= size:
            rows = np.arange(size)
        else:
            rows = self._nearest_signs(query, count)
        scores = np.asarray(self._vectors[rows] @ query, dtype=np.float32)
        limit = min(limit, len(rows))
        best = np.argpartition(-scores, limit - 1)[:limit] if limit < len(rows) \
            else np.arange(len(rows))
        best = best[np.argsort(-scores[best], kind="stable")]
        return self._keys[rows[best]], 1.0 - scores[best]

    def _nearest_signs(self, query: np.ndarray, count: int) -> np.ndarray:
        """The rows of the ``count`` vectors whose signs differ least from the query's
        (of those tied at the cut, the first), in order."""
        import numpy as np

        words = _signs(query[None, :])[:, 0]
        distance = np.bitwise_count(self._signs[0] ^ words[0]).astype(np.uint16)
        for row, word in zip(self._signs[1:], words[1:], strict=True):
            distance += np.bitwise_count(row ^ word)
        counts = np.cumsum(np.bincount(distance, minlength=self.dims + 1))
        cut = int(np.searchsorted(counts, count))  # the distance at which count is reached
        below = np.flatnonzero(distance < cut)
        at = np.flatnonzero(distance == cut)[:count - len(below)]
        return np.sort(np.concatenate([below, at]))
