"""The services a run may use, handed to the executor. The engine never builds them itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .events import Event

Sink = Callable[[Event], None]


@dataclass(slots=True)
class Runtime:
    """Clock, event sinks and the outside world (LLM, HTTP, tools) for one or many runs.

    Sinks are called synchronously, in order, for every event: keep them fast (buffer,
    then write in bulk) so they never hold up the event loop.
    """

    clock: Clock = field(default_factory=Clock)
    sinks: list[Sink] = field(default_factory=list)
    #: Resolves ``provider/model`` names to chat providers (``cellwire.services.llm``).
    llm: Any = None
    #: A pooled ``httpx.AsyncClient`` shared by HTTP nodes and providers.
    http: Any = None
    #: Python and HTTP tools by name.
    tools: Any = None
    #: Route every LLM node of the run to this ``provider/model``, when set.
    model_override: str | None = None
    #: Where unset secret environment variables are read from (None: ``os.environ``).
    environ: Mapping[str, str] | None = None

    def subscribe(self, sink: Sink) -> Sink:
        self.sinks.append(sink)
        return sink

    def unsubscribe(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
