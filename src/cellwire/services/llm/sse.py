"""Server-Sent Events as OpenAI-compatible servers send them: the ``data:`` payloads only.

Servers differ in the details: CRLF or LF line ends, ``: keep-alive`` comments, ``event:``
lines, data split over several ``data:`` lines, a final ``data: [DONE]`` or none at all.
:class:`SSEDecoder` accepts all of them and gives one payload string per event.

It takes the raw bytes as they come off the socket and splits every line of a read at once:
one call per network read instead of several per line keeps a client with hundreds of
concurrent streams cheap.
"""

from __future__ import annotations

#: The payload that ends an OpenAI stream.
DONE = "[DONE]"
_DATA = b"data:"


class SSEDecoder:
    """Feed bytes as they arrive; ``feed`` returns the data of every event they complete."""

    def __init__(self) -> None:
        #: The pieces of a line still going on (joined once it ends, so a line that comes
        #: in many reads costs its length once, not once per read).
        self._tail: list[bytes] = []
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        tail = self._tail
        if b"\n" not in chunk and b"\r" not in chunk and not (tail and tail[-1][-1:] == b"\r"):
            tail.append(chunk)
            return []
        buffer = b"".join((*tail, chunk)) if tail else chunk
        if b"\r" in buffer:
            # A read may end between the \r and \n of a CRLF: keep the \r for the next one.
            held = buffer.endswith(b"\r")
            body = buffer[:-1] if held else buffer
            body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = body.split(b"\n")
            rest = lines.pop() + (b"\r" if held else b"")
        else:
            lines = buffer.split(b"\n")
            rest = lines.pop()
        self._tail = [rest] if rest else []
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
        tail, self._tail = b"".join(self._tail).rstrip(b"\r"), []
        if tail.startswith(_DATA):
            value = tail[5:]
            self._data.append(value[1:] if value[:1] == b" " else value)
        if not self._data:
            return None
        data = b"\n".join(self._data).decode("utf-8", "replace")
        self._data.clear()
        return data
