"""Nearest chunks by cosine in process: product-quantized codes to find candidates, the full
vectors to rank them.

The chunks' vectors are kept, normalised, in ``vectors.npy`` (single precision, memory-mapped)
beside their keys in ``keys.npy``. A base of :data:`QUANTIZE_FROM` chunks or more also has
``codes.faiss``: faiss's product quantizer and each vector's codes (``IndexPQ``), one 4-bit
code per 4 dimensions (48 bytes for 384). Searches read the same codes laid out for SIMD
"fast scan" (``IndexPQFastScan``, built from them in about 10 ms at 100,000), which compares
a query with every code through small lookup tables. A search takes the :func:`candidates`
best codes and ranks them by their exact cosine, so the scores are exact; a smaller base is
ranked exactly whole.

The quantizer is trained on a sample of the vectors when the base first reaches
:data:`QUANTIZE_FROM` chunks, and again each time it has doubled since (``codes.json`` says at
what size); in between, a write encodes only the vectors it adds.

Why not a graph (HNSW) or inverted lists (IVF): on ``benchmarks/knowledge.py``'s corpus a
USearch HNSW graph found only 0.67-0.81 of the ten nearest chunks at 30,000 chunks, and IVF
partitions 0.66-0.84; scanning every code keeps the recall of a flat search (see
docs/knowledge.md, "Measured").
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Bases with fewer chunks are ranked exactly whole (a product over 4,096 x 384 floats costs
#: about what a quantized search does).
QUANTIZE_FROM = 4_096
#: Candidates ranked exactly, at the least.
MIN_CANDIDATES = 200
#: Vectors the quantizer learns from, at most.
TRAINING_SAMPLE = 20_000
#: Dimensions per 4-bit code.
DIMS_PER_CODE = 4
#: Vectors copied or encoded at a time by a write.
_SLICE = 65_536


def candidates(limit: int, size: int) -> int:
    """How many of ``size`` chunks a search of ``limit`` ranks by exact cosine: all of them
    under :data:`QUANTIZE_FROM`, else ``max(MIN_CANDIDATES, 16 * limit)``."""
    return size if size < QUANTIZE_FROM else min(size, max(MIN_CANDIDATES, 16 * limit))


@functools.cache
def _faiss() -> Any:
    import faiss

    # faiss's own threads (OpenMP; a setting of the whole process) gain under 10% on one
    # query at 100,000 chunks, and would spin on the cores the event loop and the store's
    # writer need.
    faiss.omp_set_num_threads(1)
    return faiss


def _padded(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` with zero columns added up to a multiple of 8 dimensions (an even number
    of codes, as fast scan needs); inner products are unchanged."""
    import numpy as np

    pad = (-vectors.shape[1]) % (2 * DIMS_PER_CODE)
    matrix = np.pad(vectors, ((0, 0), (0, pad))) if pad else vectors
    return np.ascontiguousarray(matrix, dtype=np.float32)


class VectorIndex:
    """The vectors in folder ``path``, ``dims`` long each."""

    def __init__(self, path: Path, dims: int):
        import numpy as np

        self.path = path
        self.dims = dims
        self._keys = np.empty(0, dtype=np.uint64)
        self._vectors = np.empty((0, dims), dtype=np.float32)
        #: The product quantizer and its codes, one row of bytes a vector (``codes.faiss``) ...
        self._quantized: Any = None
        #: ... and the same codes laid out for fast scan, which is what searches read.
        self._codes: Any = None
        self._trained_on = 0
        if (path / "keys.npy").exists():
            self._keys = np.load(path / "keys.npy")
            # A plain view of the map: indexing a memmap object costs more than the read.
            self._vectors = np.asarray(np.load(path / "vectors.npy", mmap_mode="r"))
            if self._vectors.shape != (len(self._keys), dims):
                raise ValueError(f"{path}: vectors of shape {self._vectors.shape}, not "
                                 f"({len(self._keys)}, {dims})")
            if (path / "codes.faiss").exists():
                # Through Python's file, not faiss's fopen: any path the folder may have.
                self._quantized = _faiss().deserialize_index(
                    np.fromfile(path / "codes.faiss", dtype=np.uint8))
                if not isinstance(self._quantized, _faiss().IndexPQ):
                    raise ValueError(f"{path}: codes.faiss is an index of another kind "
                                     f"({type(self._quantized).__name__}, not IndexPQ)")
                self._trained_on = int(json.loads((path / "codes.json").read_text())
                                       ["trained_on"])
                if self._quantized.ntotal != len(self._keys):
                    raise ValueError(f"{path}: {self._quantized.ntotal} codes for "
                                     f"{len(self._keys)} vectors")
                self._codes = _faiss().IndexPQFastScan(self._quantized)

    def __len__(self) -> int:
        return len(self._keys)

    def update(self, drop: np.ndarray, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Remove the vectors of keys ``drop``, add ``vectors`` under ``keys``, and write
        the files anew (each atomically)."""
        import numpy as np

        keep = ~np.isin(self._keys, drop) if len(drop) else None
        fresh = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dims)
        fresh = fresh / np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-12)
        kept = len(self._keys) if keep is None else int(keep.sum())
        all_keys = np.concatenate([self._keys if keep is None else self._keys[keep],
                                   np.asarray(keys, dtype=np.uint64)])
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / "vectors.npy.tmp"
        with tmp.open("wb") as file:
            np.lib.format.write_array_header_1_0(file, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False, "shape": (kept + len(fresh), self.dims)})
            # A slice at a time: the rows kept are copied once, and never all held at once.
            for start in range(0, len(self._keys), _SLICE):
                part = self._vectors[start:start + _SLICE]
                if keep is not None:
                    part = part[keep[start:start + _SLICE]]
                file.write(np.ascontiguousarray(part).data)
            file.write(np.ascontiguousarray(fresh).data)
        written = np.asarray(np.load(tmp, mmap_mode="r"))
        quantized, trained_on = self._encode(written, keep, fresh)
        with (self.path / "keys.npy.tmp").open("wb") as file:
            np.save(file, all_keys)
        if quantized is not None:
            _faiss().serialize_index(quantized).tofile(self.path / "codes.faiss.tmp")
            (self.path / "codes.json.tmp").write_text(json.dumps({"trained_on": trained_on}))
        tmp.replace(self.path / "vectors.npy")
        (self.path / "keys.npy.tmp").replace(self.path / "keys.npy")
        if quantized is None:
            (self.path / "codes.faiss").unlink(missing_ok=True)
            (self.path / "codes.json").unlink(missing_ok=True)
        else:
            (self.path / "codes.faiss.tmp").replace(self.path / "codes.faiss")
            (self.path / "codes.json.tmp").replace(self.path / "codes.json")
        self._keys = all_keys
        self._vectors = written  # the map outlives the rename: the same file
        self._quantized, self._trained_on = quantized, trained_on
        self._codes = None if quantized is None else _faiss().IndexPQFastScan(quantized)

    def _encode(self, vectors: np.ndarray, keep: np.ndarray | None,
                fresh: np.ndarray) -> tuple[Any, int]:
        """The quantizer and codes of ``vectors`` (the kept ones, by ``keep``, then
        ``fresh``), and the size it was trained at: (None, 0) under :data:`QUANTIZE_FROM`;
        trained anew when there is none or the base has doubled, else the codes kept and
        those of ``fresh`` alone (encoding every vector again cost 0.45 s at 100,000)."""
        import numpy as np

        size = len(vectors)
        if size < QUANTIZE_FROM:
            return None, 0
        faiss = _faiss()
        old = self._quantized
        if old is None or size >= 2 * self._trained_on:
            width = _padded(vectors[:1]).shape[1]
            quantized = faiss.IndexPQ(width, width // DIMS_PER_CODE, 4,
                                      faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)  # the same vectors make the same codes
            sample = vectors if size <= TRAINING_SAMPLE else \
                vectors[np.sort(rng.choice(size, TRAINING_SAMPLE, replace=False))]
            quantized.train(_padded(sample))
            for start in range(0, size, _SLICE):  # padded a slice at a time
                quantized.add(_padded(vectors[start:start + _SLICE]))
            return quantized, size
        codes = faiss.vector_to_array(old.codes).reshape(old.ntotal, old.code_size)
        codes = np.concatenate([codes if keep is None else codes[keep],
                                old.sa_encode(_padded(fresh))])
        quantized = faiss.IndexPQ(old.d, old.pq.M, old.pq.nbits, old.metric_type)
        quantized.pq = old.pq
        quantized.is_trained = True
        faiss.copy_array_to_vector(codes.ravel(), quantized.codes)
        quantized.ntotal = len(codes)
        return quantized, self._trained_on

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
        if self._codes is None or count >= size:
            rows = np.arange(size)
            scores = self._vectors @ query
        else:
            _, found = self._codes.search(_padded(query[None, :]), count)
            rows = found[0][found[0] >= 0]
            scores = self._vectors[rows] @ query
        limit = min(limit, len(rows))
        best = np.argpartition(-scores, limit - 1)[:limit] if limit < len(rows) \
            else np.arange(len(rows))
        best = best[np.argsort(-scores[best], kind="stable")]
        return self._keys[rows[best]], 1.0 - scores[best]
