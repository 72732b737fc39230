"""The services and layers a run uses, handed to the executor. The engine never builds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .clock import Clock
from .events import Event
from .node_cache import NodeCache
from .services import (
    ChatMemory,
    CodeExecutor,
    ConversationStore,
    FilePolicy,
    HTTPService,
    KnowledgeService,
    LLMService,
    NetworkGuard,
    ResponseCache,
    ToolService,
)

if TYPE_CHECKING:
    from .checkpoint import Checkpointer
    from .layers import Layer

#: A plain event callback; the executor turns it into a layer.
Sink = Callable[[Event], None]


@dataclass(slots=True)
class Runtime:
    """Clock, layers and the outside world for one or many runs.

    ``layers`` see every run's start, events and end (:class:`~cellwire.engine.layers.Layer`;
    a plain callable receives the events). A layer that raises is reported once and dropped
    for the rest of that run; it never fails the run. The services are typed protocols
    (:mod:`cellwire.engine.services`); ``None`` means the run has none, and a node that
    needs one fails saying how to supply it.
    """

    clock: Clock = field(default_factory=Clock)
    layers: list[Layer | Sink] = field(default_factory=list)
    #: Resolves node models to chat providers (:class:`cellwire.services.llm.LLMRouter`).
    llm: LLMService | None = None
    #: The shared, pooled HTTP client of HTTP nodes.
    http: HTTPService | None = None
    #: What HTTP nodes may reach and how large an answer may be; None: the trusted default
    #: (everything but link-local and cloud-metadata addresses), never "anything goes".
    network: NetworkGuard | None = None
    #: The tools ``tool`` and ``agent`` nodes bind to (a
    #: :class:`cellwire.services.tools.ToolRegistry`); None: the process-wide registry
    #: (``@cellwire.tool`` functions, built-ins, ``cellwire.tools`` plugins).
    tools: ToolService | None = None
    #: Knowledge bases by dataset id (``knowledge-retrieval``).
    knowledge: KnowledgeService | None = None
    #: Where code nodes run (in the kernel, or sandboxed).
    code: CodeExecutor | None = None
    #: Earlier turns of a conversation, for chat memory.
    memory: ChatMemory | None = None
    #: Conversation variables across turns: a run with ``sys.conversation_id`` starts with
    #: those its conversation's last turn left.
    conversations: ConversationStore | None = None
    #: The LLM response cache; ``cache_all`` answers every LLM call from it, not only nodes
    #: with ``cache: true``.
    cache: ResponseCache | None = None
    cache_all: bool = False
    #: Which local files the run may read (images, documents named by inputs); None: none.
    files: FilePolicy | None = None
    #: Route every LLM node of the run to this ``provider/model``, when set.
    model_override: str | None = None
    #: Results of pure nodes (code, template-transform) by fingerprint and input values; a
    #: pure node found there is not run again (its status is ``cached``). None: no reuse.
    node_cache: NodeCache | None = None
    #: Where runs commit their checkpoints (the run store); None: runs keep none.
    checkpointer: Checkpointer | None = None

    def subscribe(self, layer: Layer | Sink) -> Layer | Sink:
        """Add ``layer`` (a Layer or an event callback) to every later run; returns it."""
        self.layers.append(layer)
        return layer

    def unsubscribe(self, layer: Layer | Sink) -> None:
        if layer in self.layers:
            self.layers.remove(layer)
