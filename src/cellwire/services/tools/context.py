"""What a tool call may use from the run that makes it: HTTP, the network policy, the
knowledge bases and the secrets the user granted to that run (and nothing else)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .tool import ToolError

if TYPE_CHECKING:
    from cellwire.engine.services import HTTPService, KnowledgeService, NetworkGuard


@dataclass(frozen=True, slots=True)
class ToolContext:
    """The run's shared HTTP client, network policy and knowledge bases, and its granted
    secrets."""

    http: HTTPService | None = None
    network: NetworkGuard | None = None
    #: The run's knowledge bases (``search_knowledge``); None: the project's, opened on use.
    knowledge: KnowledgeService | None = None
    #: Secret values granted to the run, by name; a tool reads one through :meth:`secret`.
    secrets: Mapping[str, str] = field(default_factory=dict)
    #: Who is calling, for messages (``node 'x'``).
    caller: str = ""

    def secret(self, name: str, *, tool: str = "") -> str:
        """The granted value of secret ``name``; a secret the user did not grant to the run
        is an error saying how to grant it: a tool never takes one by itself."""
        value = self.secrets.get(name)
        if value is None:
            who = f"tool {tool!r}" if tool else "the tool"
            raise ToolError(f"{who} needs the secret {name!r}, which was not granted to this "
                            "run", hint=f"grant it: `cellwire run FILE --secret {name}`, or "
                            f"secrets=['{name}'] in Python", kind="SecretNotGranted")
        return value

    def client(self) -> Any:
        """The run's pooled ``httpx.AsyncClient`` (the shared one when the run has none)."""
        from cellwire.services.http import SHARED

        return (self.http or SHARED).client()
