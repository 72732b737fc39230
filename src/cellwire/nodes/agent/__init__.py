"""The agent node (Dify's default strategies: function calling and ReAct)."""

from .node import run

__all__ = ["run"]
