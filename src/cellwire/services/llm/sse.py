"""Server-Sent Events as OpenAI-compatible servers send them: the ``data:`` payloads only.

Servers differ in the details: CRLF or LF line ends, ``: keep-alive`` comments, ``event:``
lines, data split over several ``data:`` lines, a final ``data: [DONE]`` or none at all. This
parser accepts all of them and yields one payload string per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

#: The payload that ends an OpenAI stream.
DONE = "[DONE]"


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
