"""The node cache: results of pure nodes (:attr:`NodeType.pure`) by fingerprint and the
values they read, in memory for the life of the process (a kernel), least recently used
first out."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from .node import NodeResult

#: Results kept at most; a notebook's workflows rarely hold more pure nodes than this.
DEFAULT_SIZE = 4096


class NodeCache:
    """Finished results of pure nodes by :func:`~cellwire.engine.fingerprint.cache_key`.

    Thread-safe: runs on the kernel's loop and on the runner's background loop share it.
    ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, size: int = DEFAULT_SIZE):
        if size < 1:
            raise ValueError("a node cache holds at least one result")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, NodeResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> NodeResult | None:
        """The result stored under ``key``, marked ``cached`` in its metadata; None on a
        miss."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
        # Nothing was spent this time: the result carries no usage.
        return dataclasses.replace(found, outputs=dict(found.outputs), usage=None,
                                   metadata={**found.metadata, "cached": True})

    def put(self, key: str, result: NodeResult) -> None:
        with self._lock:
            self._items[key] = result
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> int:
        """Forget every result; returns how many there were."""
        with self._lock:
            count = len(self._items)
            self._items.clear()
            return count

    def __len__(self) -> int:
        return len(self._items)


__all__ = ["DEFAULT_SIZE", "NodeCache"]
