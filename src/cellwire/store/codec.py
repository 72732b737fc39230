"""JSON for stored values: never fails on odd values, and keeps each large value once.

A column holds the value's JSON, or ``@<hash>`` when the JSON is large: the text then lives
once in the ``blobs`` table, however many rows (a node's inputs and outputs, the next node's
inputs, the run's outputs) carry the same value. ``@`` never starts a JSON document, so the two
cannot be confused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

#: JSON texts at least this long go to ``blobs``; shorter ones are cheaper inline.
BLOB_MIN_CHARS = 4096
BLOB_PREFIX = "@"

# orjson writes every row (several times faster than the json module); what it refuses
# (non-string keys, integers beyond 64 bits, absurd depth) goes through the json module as
# before. Dates and dataclasses are written as their str(), as the json module's default=str
# does, so a value reads back the same whichever encoder wrote it. Not a number and the
# infinities become null: JSON has no token for them.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_fast_encode = orjson.dumps
_encode = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def to_json(value: Any) -> str | None:
    """JSON text of ``value``; values JSON cannot hold become their ``str()``."""
    if value is None:
        return None
    try:
        return _fast_encode(value, str, _OPTIONS).decode()
    except TypeError:
        pass
    try:
        return _encode(value)
    except (TypeError, ValueError, RecursionError):
        # Non-string keys, cycles or absurd depth: store a faithful-enough plain copy.
        return _encode(_plain(value, set(), 0))


def _plain(value: Any, seen: set[int], depth: int) -> Any:
    if depth > 200:
        return "<too deep>"
    if isinstance(value, Mapping):
        if id(value) in seen:
            return "<cycle>"
        seen.add(id(value))
        out = {str(k): _plain(v, seen, depth + 1) for k, v in value.items()}
        seen.discard(id(value))
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        if id(value) in seen:
            return "<cycle>"
        seen.add(id(value))
        out_list = [_plain(v, seen, depth + 1) for v in value]
        seen.discard(id(value))
        return out_list
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def from_json(text: str | None, blobs: Mapping[str, str] | None = None) -> Any:
    """The value a column holds; ``blobs`` maps hashes to the large texts."""
    if text is None:
        return None
    if text.startswith(BLOB_PREFIX):
        if blobs is None or text[1:] not in blobs:
            raise KeyError(f"the run store lost the value {text}")
        text = blobs[text[1:]]
    # The json module: orjson would read an integer beyond 64 bits as a float.
    return _decode(text)


def blob_refs(cells: Iterable[str | None]) -> set[str]:
    """The hashes referenced by ``cells``."""
    return {c[1:] for c in cells if c is not None and c.startswith(BLOB_PREFIX)}


class BlobPacker:
    """Turns values into column text, collecting the large texts to insert into ``blobs``."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: dict[str, str] = {}

    def pack(self, value: Any) -> str | None:
        if not value and type(value) is dict:
            return "{}"  # most process_data and metadata: skip the encoder
        text = to_json(value)
        if text is None or len(text) < BLOB_MIN_CHARS:
            return text
        digest = hashlib.blake2b(text.encode(), digest_size=20).hexdigest()
        self.pending[digest] = text
        return BLOB_PREFIX + digest
