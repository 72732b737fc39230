"""Server-Sent Events as OpenAI-compatible servers send them: the ``data:`` payloads only.

Servers differ in the details: CRLF or LF line ends, ``: keep-alive`` comments, ``event:``
lines, data split over several ``data:`` lines, a final ``data: [DONE]`` or none at all. This
parser accepts all of them and yields one payload string per event.

:class:`SSEDecoder` takes the raw bytes as they come off the socket and splits every line of a
read at once: one call per network read instead of several per line keeps a client with
hundreds of concurrent streams cheap.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

#: The payload that ends an OpenAI stream.
DONE = "[DONE]"
_DATA = b"data:"


class SSEParser:
    """Feed lines one at a time; ``feed`` returns a complete event's data or ``None``."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):  # a comment: servers send these as keep-alives
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        # event:, id:, retry: and unknown fields carry nothing a chat client needs.
        return None

    def flush(self) -> str | None:
        """The pending event's data, if any (call at end of stream: the last blank line may
        be missing)."""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


async def iter_sse(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The ``data`` payloads of an SSE stream, up to ``[DONE]`` or the end of the stream."""
    parser = SSEParser()
    async for raw in lines:
        # aiter_lines splits on \n, \r\n and \r; a lone \r left in a line is stripped here.
        for line in raw.split("\r") if "\r" in raw.rstrip("\r") else (raw,):
            data = parser.feed(line)
            if data is None:
                continue
            if data.strip() == DONE:
                return
            yield data
    data = parser.flush()
    if data is not None and data.strip() != DONE:
        yield data


class SSEDecoder:
    """Feed bytes as they arrive; ``feed`` returns the data of every event they complete."""

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        buffer = self._tail + chunk if self._tail else chunk
        if b"\r" in buffer:
            # A read may end between the \r and \n of a CRLF: keep the \r for the next one.
            held = buffer.endswith(b"\r")
            body = buffer[:-1] if held else buffer
            body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = body.split(b"\n")
            self._tail = lines.pop() + (b"\r" if held else b"")
        else:
            lines = buffer.split(b"\n")
            self._tail = lines.pop()
        events: list[str] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(b"\n".join(data).decode("utf-8", "replace"))
                    data.clear()
            elif line.startswith(_DATA):
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            # Comments (keep-alives), event:, id:, retry: carry nothing a chat client needs.
        return events

    def flush(self) -> str | None:
        """The pending event's data, if any (at the end of a stream that lacks the last blank
        line)."""
        tail, self._tail = self._tail.rstrip(b"\r"), b""
        if tail.startswith(_DATA):
            value = tail[5:]
            self._data.append(value[1:] if value[:1] == b" " else value)
        if not self._data:
            return None
        data = b"\n".join(self._data).decode("utf-8", "replace")
        self._data.clear()
        return data
