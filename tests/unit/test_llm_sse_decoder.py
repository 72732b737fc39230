"""The OpenAI provider's stream reading: SSE bytes split anywhere by the network, and the
chunks of one read merged without reordering anything."""

from __future__ import annotations

from cellwire.services.llm import ChatChunk, TokenUsage, ToolCallDelta
from cellwire.services.llm.openai import _merged
from cellwire.services.llm.sse import SSEDecoder

STREAM = (": keep-alive\r\n\r\nevent: message\r\ndata: {\"a\": 1}\r\n\r\n"
          "data: x\ndata: y\n\nretry: 5\nid: 7\ndata:nospace\r\r"
          "data: \u00e9t\u00e9 \u2713\n\ndata: [DONE]\n\ndata: last").encode()
EVENTS = ['{"a": 1}', "x\ny", "nospace", "\u00e9t\u00e9 \u2713", "[DONE]", "last"]


def decode(pieces: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    out = [data for piece in pieces for data in decoder.feed(piece)]
    last = decoder.flush()
    return out + ([last] if last is not None else [])


def test_whole_stream_in_one_read():
    assert decode([STREAM]) == EVENTS


def test_every_split_into_two_reads_gives_the_same_events():
    # Splits inside CRLF pairs, inside "data:", and inside multi-byte UTF-8 characters.
    for at in range(1, len(STREAM)):
        assert decode([STREAM[:at], STREAM[at:]]) == EVENTS, at


def test_byte_by_byte():
    assert decode([STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS


def test_comments_and_blank_lines_alone_give_nothing():
    assert decode([b": ping\n\n\n\r\n: ping\r\n\r\n"]) == []


def test_merged_joins_text_and_keeps_usage_and_finish_on_the_last_piece():
    usage = TokenUsage(1, 2, 3)
    chunks = [ChatChunk("a"), ChatChunk("b"), ChatChunk(finish_reason="stop"),
              ChatChunk(usage=usage)]
    merged = _merged(chunks)
    assert [(c.text, c.finish_reason, c.usage) for c in merged] == [
        ("ab", "stop", None), ("", None, usage)]


def test_merged_keeps_reasoning_before_text_and_never_moves_reasoning_after_text():
    merged = _merged([ChatChunk(reasoning="r1"), ChatChunk(reasoning="r2"), ChatChunk("t1"),
                      ChatChunk("t2"), ChatChunk(reasoning="r3"), ChatChunk("t3")])
    assert [(c.reasoning, c.text) for c in merged] == [("r1r2", "t1t2"), ("r3", "t3")]


def test_merged_leaves_tool_call_fragments_apart():
    call = ToolCallDelta(0, "c1", "f", '{"a"')
    more = ToolCallDelta(0, "c1", None, ": 1}")
    chunks = [ChatChunk("x"), ChatChunk(tool_calls=[call]), ChatChunk(tool_calls=[more])]
    merged = _merged(chunks)
    assert len(merged) == 3 and merged[1].tool_calls == [call]
    assert merged[2].tool_calls == [more]
