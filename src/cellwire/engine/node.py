"""What a node's ``run(ctx)`` receives and returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import jinja2
from jinja2.sandbox import SecurityError

from cellwire.model import Node

from .bounded_jinja import TemplateLimitExceeded, TemplateLimits
from .context import MISSING, VariableNotFound, VariablePool
from .events import NodeEvent, NodeException, NodeStarted, NodeSucceeded, StreamChunk
from .templates import pool_lookup, private_attribute, render_jinja, render_references

if TYPE_CHECKING:
    from .executor import Execution, Frame
    from .forms import Answer, Form
    from .runtime import Runtime

T = TypeVar("T")
E = TypeVar("E", bound=NodeEvent)


class NodeError(Exception):
    """A node could not do its job; names the field at fault and the fix."""

    def __init__(self, message: str, *, field: str | None = None, hint: str = "",
                 error_type: str | None = None, fatal: bool = False):
        self.field = field
        #: True when no retry can help (a bad config): the node's retries are skipped.
        self.fatal = fatal
        self.hint = hint
        self.error_type = error_type or type(self).__name__
        super().__init__(message)

    def __str__(self) -> str:
        text = super().__str__()
        if self.field:
            text = f"field '{self.field}': {text}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


@dataclass(slots=True)
class Usage:
    """Tokens and cost of the model calls a node made."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    currency: str = "USD"
    model: str = ""
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.cost + other.cost,
            self.currency,
            self.model or other.model,
            self.estimated or other.estimated,
        )


@dataclass(slots=True)
class NodeResult:
    """A node's outputs and the source handle it leaves through (branches choose one)."""

    outputs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    process_data: dict[str, Any] = field(default_factory=dict)
    handle: str = "source"
    usage: Usage | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class NodeContext:
    """A node's view of its run: its config, the variable pool, services and the stream."""

    __slots__ = ("_execution", "config", "execution_id", "frame", "node", "pool")

    def __init__(self, node: Node, config: Any, execution_id: str, frame: Frame,
                 execution: Execution):
        self.node = node
        self.config = config
        self.execution_id = execution_id
        self.pool: VariablePool = frame.pool
        self.frame = frame
        self._execution = execution

    @property
    def runtime(self) -> Runtime:
        return self._execution.runtime

    @property
    def run_id(self) -> str:
        return self._execution.run_id

    @property
    def form(self) -> Form | None:
        """The form this node paused the run with before it was resumed (human input)."""
        return self._execution.forms.get(self.node.id)

    @property
    def answer(self) -> Answer | None:
        """The answer to :attr:`form`, when a person gave one."""
        return self._execution.answers.get(self.node.id)

    @property
    def secrets(self) -> Mapping[str, str]:
        """The secret values the user granted to this run, by name (for services that
        authenticate with one, such as tools); every one is redacted from what the run shows."""
        return MappingProxyType(self._execution.state.secrets)

    def get(self, selector: Sequence[str], default: Any = MISSING, *, field: str | None = None) -> Any:
        """The value at ``selector``; a missing value raises a :class:`NodeError` naming ``field``."""
        try:
            return self.pool.get(selector, default)
        except VariableNotFound as exc:
            raise NodeError(
                f"cannot read {'.'.join(selector)}: {exc}",
                field=field,
                hint="check that the upstream node ran and has that output",
            ) from None

    def get_list(self, selector: Sequence[str], *, field: str) -> list[Any]:
        """The array at ``selector`` (a None value reads as ``[]``); anything else is a
        :class:`NodeError` naming ``field``."""
        if len(selector) < 2:
            raise NodeError("no array variable is selected", field=field,
                            hint=f"set {field} to an array variable, e.g. ['start', 'items']")
        value = self.get(selector, field=field)
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return list(value)
        raise NodeError(f"{'.'.join(selector)} is a {type(value).__name__}, not an array",
                        field=field, hint=f"point {field} at an array variable")

    def render(self, text: str, *, answer: bool = False) -> str:
        """Replace the ``{{#node.var#}}`` references in a plain text field; nothing else.

        As in Dify, ``{{ name }}`` in such a field is literal text; a value reads as Dify's
        segment text and a variable the pool lacks as its selector. ``answer`` renders as
        Dify's answer shows it (Markdown values, nothing for a missing variable).
        """
        return render_references(text, pool_lookup(self.pool), answer=answer)

    async def render_jinja(self, text: str, names: Mapping[str, Any] | None = None, *,
                           field: str, limits: TemplateLimits | None = None) -> str:
        """Render a jinja2-mode field (sandboxed) over ``names`` and the pool, within
        ``limits`` (default: the prompt limits, :meth:`TemplateLimits.from_env`).

        Templates that can loop render on a thread, so the loop stays free and the node's
        ``max_time`` stops them. Every failure (syntax, sandbox, a limit, an expression that
        raises) is a :class:`NodeError` naming ``field``.
        """
        try:
            bad = private_attribute(text)
            if bad:
                # The sandbox would print nothing there; say why instead.
                raise NodeError(f"blocked by the sandbox: access to attribute {bad!r} is not "
                                "allowed", field=field, error_type="SecurityError",
                                hint="templates may not use names starting with '__'")
            return await render_jinja(text, self.pool, names,
                                      limits=limits or self.template_limits("prompt"))
        except TemplateLimitExceeded as exc:
            # The same template fails the same way again: no retry.
            raise NodeError(str(exc), field=field, hint=exc.hint, fatal=True,
                            error_type="TemplateLimitExceeded") from None
        except jinja2.TemplateSyntaxError as exc:
            raise NodeError(f"syntax error on line {exc.lineno}: {exc.message}", field=field,
                            hint="fix the Jinja syntax of the template") from None
        except SecurityError as exc:
            raise NodeError(f"blocked by the sandbox: {exc}", field=field,
                            hint="templates may not reach Python internals") from None
        except jinja2.TemplateError as exc:
            raise NodeError(f"template error: {exc}", field=field,
                            hint="check the variable names the template uses") from None
        except NodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a TypeError from `{{ 1 + 'a' }}`
            raise NodeError(f"rendering failed: {type(exc).__name__}: {exc}", field=field,
                            hint="check the expressions of the template") from None

    def template_limits(self, kind: str) -> TemplateLimits:
        """The limits of a ``kind`` render (``template`` or ``prompt``), read from the
        environment once per run: a run of thousands of renders reads it once."""
        limits = self._execution.template_limits
        found = limits.get(kind)
        if found is None:
            found = limits[kind] = TemplateLimits.from_env(kind)
        return found

    def error(self, message: str, *, field: str | None = None, hint: str = "") -> NodeError:
        return NodeError(message, field=field, hint=hint)

    async def stream(self, text: str, *, selector: Sequence[str] | None = None,
                     is_final: bool = False) -> None:
        """Send a piece of text to the run's stream (answers, LLM tokens)."""
        execution = self._execution
        execution.emit(
            StreamChunk(
                run_id=execution.run_id, time=execution.runtime.clock.now(), node_id=self.node.id,
                node_type=self.node.type, execution_id=self.execution_id,
                parent_id=self.frame.container_id, round=self.frame.round,
                parent_execution_id=self.frame.parent_execution_id,
                selector=tuple(selector or (self.node.id, "answer")), text=text, is_final=is_final,
            )
        )

    def emit(self, event_type: type[E], /, **fields: Any) -> E:
        """Send an event about this node execution (e.g. a container's progress) to the layers.

        The run, time, node, execution, parent and round fields are filled in.
        """
        execution = self._execution
        event = event_type(
            run_id=execution.run_id, time=execution.runtime.clock.now(), node_id=self.node.id,
            node_type=self.node.type, execution_id=self.execution_id,
            parent_id=self.frame.container_id, round=self.frame.round,
            parent_execution_id=self.frame.parent_execution_id, **fields,
        )
        execution.emit(event)
        return event

    def record_step(self, node_type: str, title: str, *, step: int, started_at: float,
                    inputs: Mapping[str, Any] | None = None,
                    outputs: Mapping[str, Any] | None = None,
                    process_data: Mapping[str, Any] | None = None,
                    metadata: Mapping[str, Any] | None = None, usage: Usage | None = None,
                    error: str | None = None, error_type: str = "") -> str:
        """Record one step of this node (an agent's model call or tool call) as a trace row
        of its own, nested under this execution: node id ``<node>/<step>``, parent this node
        and this execution. Its ``usage`` counts toward the run's (so the node's own result
        should not count it again). Returns the step's execution id."""
        execution = self._execution
        step_id = f"{self.execution_id}/{step}"
        base: dict[str, Any] = {
            "run_id": execution.run_id, "node_id": f"{self.node.id}/{step}",
            "node_type": node_type, "execution_id": step_id, "parent_id": self.node.id,
            "round": step, "parent_execution_id": self.execution_id}
        execution.emit(NodeStarted(time=started_at, title=title, index=step, **base))
        finished: dict[str, Any] = {
            "time": execution.runtime.clock.now(), "title": title, "index": step,
            "started_at": started_at, "elapsed": max(0.0, execution.runtime.clock.now()
                                                     - started_at),
            "inputs": dict(inputs or {}), "outputs": dict(outputs or {}),
            "process_data": dict(process_data or {}), "metadata": dict(metadata or {})}
        if usage is not None:
            finished.update(prompt_tokens=usage.prompt_tokens,
                            completion_tokens=usage.completion_tokens,
                            total_tokens=usage.total_tokens, cost=usage.cost)
            execution.state.usage = execution.state.usage + usage
        if error is None:
            execution.emit(NodeSucceeded(**base, **finished))
        else:
            execution.emit(NodeException(**base, **finished, error=error,
                                         error_type=error_type or "ToolError"))
        return step_id

    def descendants(self) -> list[str]:
        """Ids of the nodes inside this container, at any depth."""
        return self._execution.compiled.workflow.descendants(self.node.id)

    async def to_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking code off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args, **kwargs))

    async def run_children(self, pool: VariablePool, round: int) -> Frame:
        """Run this container's sub-graph once in ``pool``; returns the finished frame."""
        return await self._execution.run_children(self.node.id, pool, round, self)
