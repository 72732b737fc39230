"""Search indexes in process, kept beside a knowledge base's LanceDB ``chunks`` table.

LanceDB stays the store of record; a query through it costs about 1 ms at the least (even a
``limit`` scan of one column, or fetching twelve rows by offset) and 3-4 ms for a full-text or
vector search, which is too much for a retrieval that should cost well under a millisecond.
So the chunks are also indexed here, in the base's ``search/`` folder:

- ``<generation>/text/``: a BM25 index of their text (:mod:`.textindex`);
- ``<generation>/vectors/``: their vectors, searched by product-quantized codes and ranked
  exactly (:mod:`.vectorindex`), for bases with an embedding model;
- ``state.json``: the generation, and the version and row count of the ``chunks`` table that
  the indexes hold.

The chunks' columns (all but the vector) are read from LanceDB into memory when the indexes
are opened, so a hit becomes a row without a query. Writes through :class:`.base.KnowledgeBase`
update the indexes in the same step (:meth:`SideIndex.update`); indexes that do not match the
table (made by another process, an older version, or a write that stopped half way) are
rebuilt from the table on a thread of their own, and until they are ready the base searches
through LanceDB (:meth:`SideIndex.ready`). Searches with metadata filters always go through
LanceDB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .textindex import TextIndex
from .vectorindex import VectorIndex

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
#: Bumped when what the folder holds changes: indexes of another format are rebuilt.
FORMAT = 2
STATE = "state.json"
#: The chunk columns a hit carries (all but the vector).
COLUMNS = ["id", "document_id", "document_name", "source", "position", "content", "parent",
           "parent_index"]


def chunk_key(chunk_id: str) -> int:
    """The 63-bit key of a chunk id in both indexes (the first 8 bytes of its BLAKE2b)."""
    digest = hashlib.blake2b(chunk_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def chunk_keys(chunk_ids: Sequence[str]) -> np.ndarray:
    import numpy as np

    return np.fromiter((chunk_key(i) for i in chunk_ids), dtype=np.uint64, count=len(chunk_ids))


class _Row(dict[str, Any]):
    """A chunk's row, each column read from the columns when first asked for: a search
    builds rows for all its candidates and reads most of them only for their id."""

    __slots__ = ("_at", "_columns")

    def __init__(self, columns: dict[str, list[Any]], at: int):
        super().__init__()
        self._columns = columns
        self._at = at

    def __missing__(self, name: str) -> Any:
        value = self[name] = self._columns[name][self._at]
        return value


class _Rows:
    """The chunks' columns in memory, found by key.

    Held as Python lists and a dict from key to row, not Arrow arrays and a sorted key array:
    a row costs under a microsecond so, and 50-90 us a search from Arrow (100,000 chunks);
    converting the whole columns once costs about 40 ms."""

    def __init__(self, table: Any):
        self.columns: dict[str, list[Any]] = {name: table.column(name).to_pylist()
                                              for name in table.column_names}
        self.size = int(table.num_rows)
        self.rows = dict(zip(chunk_keys(self.columns["id"]).tolist(), range(self.size)))
        if len(self.rows) != self.size:
            raise ValueError("two chunk ids share a key")

    def get(self, keys: Sequence[int]) -> list[dict[str, Any] | None]:
        """The row of each key, None for a key that is not in the table."""
        found, columns = self.rows, self.columns
        return [None if (row := found.get(key)) is None else _Row(columns, row)
                for key in keys]


@dataclass(frozen=True)
class _Snapshot:
    """Indexes and rows of one version of the table; replaced whole, never changed."""

    version: int
    rows: _Rows
    text: TextIndex
    vectors: VectorIndex | None


class SideIndex:
    """The in-process indexes of the chunks table of LanceDB database ``lance`` (a folder),
    kept in ``folder``."""

    def __init__(self, folder: Path, lance: Path):
        self.folder = folder
        self.lance = lance
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self._rebuilding: threading.Thread | None = None
        # A rebuild that failed is not tried again until forget().
        self._failed = False
        #: False: every search goes through LanceDB (to compare the two).
        self.enabled = True

    @property
    def opened(self) -> bool:
        """Whether the indexes are open (a search then costs no I/O to start)."""
        return self._snapshot is not None or not self.enabled

    def forget(self) -> None:
        """Drop the open indexes: the next search opens them again, as of then."""
        self._snapshot = None
        self._failed = False

    # -- state ---------------------------------------------------------------------------

    def _state(self) -> dict[str, Any] | None:
        try:
            state = json.loads((self.folder / STATE).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and state.get("format") == FORMAT else None

    def _save_state(self, generation: str, version: int, rows: int) -> dict[str, Any]:
        state = {"format": FORMAT, "generation": generation, "version": version, "rows": rows}
        path = self.folder / STATE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)
        return state

    def _forget_state(self) -> None:
        (self.folder / STATE).unlink(missing_ok=True)

    # -- opening -------------------------------------------------------------------------

    def ready(self, table: Any) -> _Snapshot | None:
        """The open indexes; else those of ``table`` (a LanceDB table handle) at its
        version, opened now, or None while they are rebuilt (a rebuild is started when they
        do not match the table). What was open is kept until :meth:`forget` or a write."""
        if not self.enabled:
            return None
        snapshot = self._snapshot
        if snapshot is not None:
            return snapshot
        if self._failed:
            return None
        with self._lock:
            state = self._state()
            if state is not None and state["version"] == int(table.version):
                try:
                    self._snapshot = self._open(table, state)
                except (OSError, ValueError, RuntimeError) as error:
                    log.warning("knowledge search index %s: %s; rebuilding it", self.folder,
                                error)
                else:
                    return self._snapshot
        self._start_rebuild()
        return None

    def _open(self, table: Any, state: dict[str, Any]) -> _Snapshot:
        rows = _Rows(table.search().select(COLUMNS).limit(None).to_arrow())
        if rows.size != state["rows"]:
            raise ValueError("the indexes do not hold the table's rows")
        place = self.folder / state["generation"]
        vectors = None
        dims = _dims(table)
        if dims is not None:
            vectors = VectorIndex(place / "vectors", dims)
        text = TextIndex(place / "text")
        text.prepare()
        return _Snapshot(int(state["version"]), rows, text, vectors)

    def _start_rebuild(self) -> None:
        with self._lock:
            if self._rebuilding is not None and self._rebuilding.is_alive():
                return
            self._rebuilding = threading.Thread(target=self._rebuild_latest, daemon=True,
                                                name=f"cellwire-kb-index {self.folder}")
            self._rebuilding.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a rebuild that is under way (tests, benchmarks)."""
        thread = self._rebuilding
        if thread is not None:
            thread.join(timeout)

    def _rebuild_latest(self) -> None:
        import lancedb

        try:
            table = lancedb.connect(str(self.lance)).open_table("chunks")
            with self._lock:
                self._rebuild(table)
        except Exception:  # a cache of the table: searches go on through LanceDB
            self._failed = True
            log.warning("knowledge search index %s could not be built; searching through "
                        "LanceDB", self.folder, exc_info=True)

    def _rebuild(self, table: Any) -> None:
        """Index every row of ``table`` into a new generation (the lock held)."""
        import numpy as np

        version = int(table.version)
        data = table.to_arrow()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._forget_state()
        generation = uuid.uuid4().hex[:12]
        place = self.folder / generation
        ids = data.column("id").to_pylist()
        keys = chunk_keys(ids)
        TextIndex(place / "text").update([], keys.tolist(),
                                         data.column("document_id").to_pylist(),
                                         data.column("content").to_pylist())
        dims = _dims(table)
        if dims is not None:
            column = data.column("vector").combine_chunks()
            vectors = np.asarray(column.values.to_numpy(zero_copy_only=False),
                                 dtype=np.float32).reshape(-1, dims)
            VectorIndex(place / "vectors", dims).update(
                np.empty(0, dtype=np.uint64), keys, vectors)
        state = self._save_state(generation, version, len(ids))
        for old in self.folder.iterdir():
            if old.is_dir() and old.name != generation:
                shutil.rmtree(old, ignore_errors=True)
        self._snapshot = self._open(table, state)

    # -- writing -------------------------------------------------------------------------

    def update(self, table: Any, before: int | None, dropped: Sequence[str],
               drop_documents: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        """Bring the indexes to ``table`` after a write through this base: ``before`` was the
        table's version before it (None: the table is new), ``dropped`` the ids of the chunks
        it deleted (of documents ``drop_documents``) and ``rows`` the chunks it added (each
        with its ``vector`` when the base embeds). Indexes that did not match the table before
        are rebuilt instead."""
        import numpy as np

        self._snapshot = None
        with self._lock:
            state = self._state()
            in_step = (state is None and before is None) or \
                (state is not None and state["version"] == before)
            if not in_step:
                self._rebuild(table)
                return
            self._forget_state()
            generation = state["generation"] if state is not None else uuid.uuid4().hex[:12]
            place = self.folder / generation
            keys = chunk_keys([row["id"] for row in rows])
            TextIndex(place / "text").update(drop_documents, keys.tolist(),
                                             [row["document_id"] for row in rows],
                                             [row["content"] for row in rows])
            dims = _dims(table)
            if dims is not None:
                vectors = np.asarray([row["vector"] for row in rows], dtype=np.float32) \
                    if rows else np.empty((0, dims), dtype=np.float32)
                VectorIndex(place / "vectors", dims).update(chunk_keys(dropped), keys,
                                                                    vectors)
            state = self._save_state(generation, int(table.version), int(table.count_rows()))
            self._snapshot = self._open(table, state)

    # -- searching -----------------------------------------------------------------------

    @staticmethod
    def fulltext(snapshot: _Snapshot, query: str, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` best chunks for ``query`` by BM25, as rows with ``_score``."""
        found = snapshot.text.search(query, limit)
        rows = snapshot.rows.get([key for key, _ in found])
        out = []
        for row, (_, score) in zip(rows, found, strict=True):
            if row is not None:
                row["_score"] = score
                out.append(row)
        return out

    @staticmethod
    def nearest(snapshot: _Snapshot, vector: np.ndarray, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` chunks nearest ``vector``, as rows with ``_distance`` (cosine)."""
        if snapshot.vectors is None:
            return []
        keys, distances = snapshot.vectors.search(vector, limit)
        rows = snapshot.rows.get(keys.tolist())
        out = []
        for row, distance in zip(rows, distances.tolist(), strict=True):
            if row is not None:
                row["_distance"] = distance
                out.append(row)
        return out


def _dims(table: Any) -> int | None:
    """The length of the table's vectors; None when it has none."""
    import pyarrow as pa

    schema = table.schema
    if "vector" not in schema.names:
        return None
    kind = schema.field("vector").type
    return int(kind.list_size) if isinstance(kind, pa.FixedSizeListType) else None
