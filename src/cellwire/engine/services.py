"""What a run may use from the outside world, as typed protocols.

The engine never builds a service and never looks for one: the runner (``cellwire.runner``)
puts them on the :class:`~cellwire.engine.Runtime`, tests pass doubles explicitly, and a node
reads the one it needs (``ctx.runtime.memory``). A service a run lacks is ``None``, and the
node that needs it says how to supply it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import httpx

    from cellwire.services.llm.base import ChatResponse, TokenUsage
    from cellwire.services.llm.prices import Priced
    from cellwire.services.llm.router import Route


class LLMService(Protocol):
    """Resolves a node's model to a provider and prices what it used
    (:class:`cellwire.services.llm.LLMRouter`)."""

    def resolve_config(self, provider: str, model: str, *, override: str | None = None,
                       fallback: bool = True) -> Route: ...

    def priced(self, route: Route, usage: TokenUsage) -> Priced: ...

    def max_input_tokens(self, route: Route) -> int | None: ...


class HTTPService(Protocol):
    """The run's shared, pooled HTTP client (one per event loop: connections belong to the
    loop that opened them; :class:`cellwire.services.http.SharedHTTP`). ``verify=False``
    is a client that skips TLS certificate checks (a node's ``ssl_verify: false``)."""

    def client(self, *, verify: bool = True) -> httpx.AsyncClient: ...


class NetworkGuard(Protocol):
    """What HTTP sent on a workflow's behalf may reach, and how large an answer may be
    (:class:`cellwire.services.http.NetworkPolicy`)."""

    @property
    def max_text_size(self) -> int: ...

    @property
    def max_binary_size(self) -> int: ...

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses a connection to ``host:port`` may go to, each one checked; raises
        :class:`cellwire.services.http.AddressRefused` when the policy refuses one."""
        ...


class Turn(NamedTuple):
    """One earlier turn of a conversation: what the user asked and what was answered."""

    run_id: str
    query: str
    answer: str


class ChatMemory(Protocol):
    """Earlier turns of a conversation (``sys.conversation_id``), oldest first."""

    def conversation_turns(self, workflow: str, conversation_id: str, limit: int, *,
                           node_id: str | None = None,
                           exclude_run: str | None = None) -> Sequence[Turn]: ...


class ConversationStore(Protocol):
    """The conversation variables each conversation's last turn left (advanced-chat). It
    may block briefly: the executor calls it on a thread."""

    def conversation_variables(self, workflow: str,
                               conversation_id: str) -> Mapping[str, Any]: ...


class ResponseCache(Protocol):
    """LLM replies by request key. Its methods may block briefly: nodes call them on a thread."""

    def get(self, key: str) -> ChatResponse | None: ...

    def put(self, key: str, provider: str, response: ChatResponse) -> None: ...


@runtime_checkable
class ToolService(Protocol):
    """Registered tools, bound by Dify's provider and tool name and called with a timeout
    and a cap on the result (:class:`cellwire.services.tools.ToolRegistry`)."""

    def find(self, tool_name: str, provider: str = "") -> Any:
        """The tool a reference binds to, or None."""
        ...

    def why_unbound(self, tool_name: str, provider: str = "") -> str: ...

    async def call(self, tool: Any, arguments: Mapping[str, Any], context: Any = None) -> Any:
        """The tool's result (a ``ToolOutput``); raises ``ToolError``."""
        ...


class KnowledgeService(Protocol):
    """Knowledge bases by dataset id: ``retrieve`` returns Dify-shaped result chunks
    (:class:`cellwire.services.knowledge.Knowledge`); ``filters`` are Dify's metadata
    filtering conditions; ``rerank`` a rerank model
    (:class:`cellwire.services.knowledge.rerank.ModelReranker`)."""

    async def retrieve(self, dataset_ids: Sequence[str], query: str, *,
                       top_k: int | None = None, score_threshold: float | None = None,
                       mode: Any = None, fusion: str = "rrf", vector_weight: float = 0.7,
                       keyword_weight: float = 0.3, filters: Any = None,
                       rerank: Any = None) -> list[dict[str, Any]]: ...

    def describe_bases(self, dataset_ids: Sequence[str]) -> list[dict[str, str]]:
        """Each base as ``{key, name, description}`` (single retrieval's choice)."""
        ...

    def metadata_fields(self, dataset_ids: Sequence[str]) -> list[dict[str, str]]:
        """The documents' metadata fields as ``{name, type}`` (automatic filtering)."""
        ...


class CodeResult(NamedTuple):
    """What a code execution returned, and what it printed."""

    outputs: dict[str, Any]
    stdout: str = ""


class CodeFailed(Exception):
    """The code could not run, or raised: the message says what happened (the user's own
    line, where there is one), ``field`` and ``hint`` where to look and how to fix it."""

    def __init__(self, message: str, *, field: str = "code", hint: str | None = None,
                 error_type: str | None = None):
        super().__init__(message)
        self.field = field
        self.hint = hint
        self.error_type = error_type


class CodeExecutor(Protocol):
    """Runs a code node's ``main(**inputs)`` somewhere else than the kernel (the sandbox) and
    returns its outputs; raises :class:`CodeFailed` when the code fails. Without one, code
    nodes run in the kernel: the code of the user's own cells is trusted."""

    async def run(self, language: str, code: str, inputs: Mapping[str, Any], *,
                  timeout: float | None = None) -> CodeResult: ...


class FileAccessDenied(PermissionError):
    """A run asked for a local file its file policy does not grant; the message says how."""


class FilePolicy(Protocol):
    """Which local files a run may read (a notebook its own folder; a served run none)."""

    def check(self, path: str | Path) -> Path:
        """The resolved path when the run may read it; raises :class:`FileAccessDenied`."""
        ...


__all__ = [
    "ChatMemory", "CodeExecutor", "CodeFailed", "CodeResult", "ConversationStore", "FileAccessDenied",
    "FilePolicy", "HTTPService",
    "KnowledgeService", "LLMService", "NetworkGuard", "ResponseCache", "ToolService", "Turn",
]
