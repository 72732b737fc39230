"""Request bodies of the Service API, with Dify's field names (FastAPI checks them; a bad
body is answered 400 ``invalid_param``, as Dify does)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class WorkflowRunRequest(_Body):
    """``POST /v1/workflows/run``."""

    inputs: dict[str, Any] = Field(description="values of the start node's variables")
    response_mode: Literal["blocking", "streaming"] = "streaming"
    user: str = Field(min_length=1, description="the end user's id")
    files: list[Any] | None = None
    trace_id: str | None = None


class ChatRequest(_Body):
    """``POST /v1/chat-messages``."""

    query: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    response_mode: Literal["blocking", "streaming"] = "streaming"
    user: str = Field(min_length=1)
    conversation_id: str | None = None
    files: list[Any] | None = None
    auto_generate_name: bool = True


class StopRequest(_Body):
    """``POST .../stop``."""

    user: str = Field(min_length=1)


class RenameRequest(_Body):
    """``POST /v1/conversations/{id}/name``."""

    name: str | None = None
    auto_generate: bool = False
    user: str = Field(min_length=1)


class DeleteRequest(_Body):
    user: str = Field(min_length=1)


class FormSubmit(_Body):
    """``POST /v1/form/human_input/{form_token}``."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    action: str = Field(min_length=1)
    user: str | None = None


__all__ = ["ChatRequest", "DeleteRequest", "FormSubmit", "RenameRequest", "StopRequest",
           "WorkflowRunRequest"]
