"""LLM service: the provider interface, the router from model names to providers, and the
scripted test provider. HTTP providers, price tables, caching and rate limits plug in here."""

from .base import (
    AuthenticationError,
    ChatAccumulator,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    Cost,
    Provider,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    RetryableProviderError,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    UnknownModelError,
    estimate_tokens,
)
from .router import DEFAULT_MODEL_ENV, LLMRouter, Route, default_router, provider_key, split_model
from .scripted import Rule, ScriptedProvider, example_from_schema

__all__ = [
    "DEFAULT_MODEL_ENV", "AuthenticationError", "ChatAccumulator", "ChatChunk", "ChatMessage",
    "ChatRequest", "ChatResponse", "Cost", "LLMRouter", "Provider", "ProviderError",
    "ProviderTimeout", "RateLimitError", "RetryableProviderError", "Route", "Rule",
    "ScriptedProvider", "TokenUsage", "ToolCall", "ToolCallDelta", "UnknownModelError",
    "default_router", "estimate_tokens", "example_from_schema", "provider_key", "split_model",
]
