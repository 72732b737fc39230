"""The tool registry: tools by provider and name, bound to Dify's tool references, and
called with a timeout and a cap on what they return.

Binding follows Dify's identity of a tool (``provider`` + ``tool_name``): an exact match
first, then the tool name alone when exactly one registered tool has it. A mapping of
renames (``{"time/current_time": "now"}``) points a Dify tool at one registered under
another name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .context import ToolContext
from .tool import Tool, ToolError, from_function

#: Seconds a tool call may take unless the tool or the registry says otherwise.
DEFAULT_TIMEOUT = float(os.environ.get("CELLWIRE_TOOL_TIMEOUT", "60"))
#: Characters a tool's result may have (as text or JSON) before the call is an error.
DEFAULT_MAX_RESULT = int(os.environ.get("CELLWIRE_TOOL_MAX_RESULT", str(256 * 1024)))


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A tool's result in Dify's shape: ``text``, ``files``, ``json``; ``variables`` are a
    mapping result's keys (Dify's variable messages), added to a tool node's outputs."""

    text: str
    files: list[Any]
    json: list[Any]
    variables: dict[str, Any]
    #: What the result held that could not be kept (say, an image, as tools return no files
    #: yet); a tool node shows them in its ``process_data.notes``.
    notes: tuple[str, ...] = ()

    def as_text(self) -> str:
        """What an agent hands its model: the text, else the JSON."""
        if self.text:
            return self.text
        if self.json:
            value = self.json[0] if len(self.json) == 1 else self.json
            return json.dumps(value, ensure_ascii=False, default=str)
        return ""


def _provider_names(provider: str) -> set[str]:
    """The names a Dify provider reference may go by: ``langgenius/time/time``, ``time``."""
    names = {provider} if provider else set()
    if "/" in provider:
        names.update(p for p in provider.split("/") if p)
    return names


class ToolRegistry:
    """Tools by ``provider/name``; the ``tools`` service of a run.

    ``renames`` maps a Dify tool (``provider/tool_name`` or ``tool_name``) to a registered
    one (``name`` or ``provider/name``).
    """

    def __init__(self, tools: Iterable[Tool | Any] = (), *,
                 renames: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 max_result: int = DEFAULT_MAX_RESULT) -> None:
        self._tools: dict[str, Tool] = {}
        self._lock = threading.Lock()
        self.renames: dict[str, str] = dict(renames or {})
        self.timeout = timeout
        self.max_result = max_result
        self.extend(tools)

    # -- contents ------------------------------------------------------------------------

    def add(self, tool: Tool | Any) -> Tool:
        """Register ``tool`` (a :class:`Tool` or a typed function); a tool of the same
        provider and name is replaced (a notebook cell run again)."""
        made = tool if isinstance(tool, Tool) else from_function(tool)
        with self._lock:
            self._tools[made.key] = made
        return made

    def extend(self, tools: Iterable[Tool | Any]) -> None:
        for item in tools:
            if isinstance(item, ToolRegistry):
                self.extend(item)
                self.renames = {**item.renames, **self.renames}
            else:
                self.add(item)

    def remove(self, name: str, provider: str | None = None) -> None:
        with self._lock:
            for key in [k for k, t in self._tools.items()
                        if t.name == name and provider in (None, t.provider)]:
                del self._tools[key]

    def __iter__(self) -> Iterator[Tool]:
        with self._lock:
            return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return any(t.name == name or t.key == name for t in self)

    def merged(self, *others: Iterable[Tool | Any]) -> ToolRegistry:
        """A new registry with these tools, then ``others`` over them (same limits)."""
        out = ToolRegistry(self, renames=self.renames, timeout=self.timeout,
                           max_result=self.max_result)
        for other in others:
            out.extend(other)
        return out

    # -- binding -----------------------------------------------------------------------------

    def get(self, name: str) -> Tool | None:
        """The tool named ``name`` (``provider/name`` or a name only one tool has)."""
        if "/" in name:
            provider, _, tool_name = name.rpartition("/")
            return self.find(tool_name, provider)
        return self.find(name)

    def find(self, tool_name: str, provider: str = "") -> Tool | None:
        """The tool a Dify reference (``provider`` may be empty) binds to, or None.

        A rename applies first; then a tool with that name whose provider is one of the
        names the reference's provider goes by; then the one tool of that name, if only one
        has it."""
        renamed = self._renamed(tool_name, provider)
        if renamed is not None:
            tool_name, provider = renamed
        tools = [t for t in self if t.name == tool_name]
        wanted = _provider_names(provider)
        exact = [t for t in tools if t.provider in wanted]
        if len(exact) == 1:
            return exact[0]
        return tools[0] if len(tools) == 1 else None

    def _renamed(self, tool_name: str, provider: str) -> tuple[str, str] | None:
        for key in [*(f"{p}/{tool_name}" for p in sorted(_provider_names(provider))), tool_name]:
            target = self.renames.get(key)
            if target is not None:
                if "/" in target:
                    prov, _, name = target.rpartition("/")
                    return name, prov
                return target, ""
        return None

    def why_unbound(self, tool_name: str, provider: str = "") -> str:
        """Why ``find`` found nothing: no tool of that name, or several."""
        same = [t.key for t in self if t.name == tool_name]
        if len(same) > 1:
            return (f"{len(same)} registered tools are named {tool_name!r} ({', '.join(same)}) "
                    f"and none has the provider {provider!r}")
        return f"no registered tool is named {tool_name!r}"

    # -- calling -------------------------------------------------------------------------------

    async def call(self, tool: Tool, arguments: Mapping[str, Any],
                   context: ToolContext | None = None) -> ToolOutput:
        """Call ``tool`` with ``arguments`` within its timeout; its result as a
        :class:`ToolOutput` no larger than ``max_result`` characters. Every failure is a
        :class:`ToolError`."""
        timeout = tool.timeout if tool.timeout is not None else self.timeout
        context = context or ToolContext()
        # A tool sees only the granted secrets it declares, never the run's others.
        context = dataclasses.replace(context, secrets={
            k: v for k, v in context.secrets.items() if k in tool.secrets})
        try:
            result = await asyncio.wait_for(tool.invoke(dict(arguments), context), timeout)
        except TimeoutError:
            raise ToolError(f"tool {tool.name!r} did not answer within {timeout:g} s",
                            hint="make it faster, or raise its timeout: @tool(timeout=...) "
                                 "or $CELLWIRE_TOOL_TIMEOUT", kind="ToolTimeout") from None
        except ToolError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a tool may raise anything
            raise ToolError(f"tool {tool.name!r} raised {type(exc).__name__}: {exc}",
                            hint="check the tool's arguments and the tool itself",
                            kind="ToolInvokeError") from None
        output = to_output(result)
        size = len(output.text) + len(json.dumps(output.json, default=str)) if output.json \
            else len(output.text)
        if size > self.max_result:
            raise ToolError(f"tool {tool.name!r} returned {size} characters, more than the "
                            f"{self.max_result} a result may have",
                            hint="make the tool return less (paging, a summary), or raise "
                                 "$CELLWIRE_TOOL_MAX_RESULT", kind="ToolResultTooLarge")
        return output


def to_output(result: Any) -> ToolOutput:
    """A Python tool's return value in Dify's shape."""
    if isinstance(result, ToolOutput):
        return result
    if result is None:
        return ToolOutput("", [], [], {})
    if isinstance(result, str):
        return ToolOutput(result, [], [], {})
    if isinstance(result, bytes):
        return ToolOutput(result.decode("utf-8", errors="replace"), [], [], {})
    if isinstance(result, Mapping):
        data = _jsonable(dict(result))
        return ToolOutput("", [], [data], {str(k): v for k, v in data.items()})
    if isinstance(result, (list, tuple)):
        data = _jsonable(list(result))
        return ToolOutput("", [], data if all(isinstance(i, dict) for i in data) else [data], {})
    if hasattr(result, "model_dump"):
        return to_output(result.model_dump(mode="json"))
    return ToolOutput(str(result), [], [], {})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


_default: ToolRegistry | None = None
_default_lock = threading.RLock()


def default_registry() -> ToolRegistry:
    """The process-wide registry: ``@tool`` functions, the built-ins and the tools of the
    ``cellwire.tools`` entry points (loaded on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            from .builtins import BUILTINS
            from .loading import entry_point_tools

            # Set before the plugins load: their @tool decorators add to it.
            _default = registry = ToolRegistry(BUILTINS)
            registry.extend(entry_point_tools())
        return _default


def run_registry(base: Any, *tools: Iterable[Tool | Any] | None,
                 renames: Mapping[str, str] | None = None) -> Any:
    """The tools service of a run: ``base`` (a run's ``runtime.tools``, None for the default
    registry) with ``tools`` added and ``renames`` applied; ``base`` itself when nothing is
    added (a service that is not a registry is kept as it is)."""
    extra = [list(t) for t in tools if t]
    if not extra and not renames:
        return base
    if base is not None and not isinstance(base, ToolRegistry):
        return base
    merged = (base or default_registry()).merged(*extra)
    if renames:
        merged.renames.update(renames)
    return merged


def load_renames(path: str | os.PathLike[str]) -> dict[str, str]:
    """A renames file: a YAML or JSON mapping of ``provider/tool_name`` (or ``tool_name``)
    to the registered tool (``name`` or ``provider/name``)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML or JSON: {exc}") from None
    if not isinstance(data, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: must map Dify tools to registered ones, e.g. "
                         "'time/current_time: now'")
    return dict(data)
