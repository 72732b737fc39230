"""Jinja with limits: the sandbox that renders jinja2-mode fields, bounded in size, work and time.

Jinja's sandbox keeps templates away from Python internals but not from the machine: one
``{{ 'a' * 1500000000 }}`` takes 1.5 GB and two nested ``range(100000)`` loops never end.
Every render here runs under a :class:`TemplateLimits` budget:

* **max_length**: no text the template grows (``*``, ``+``, ``~``, ``%``, ``format``, a
  growing filter or string method, a block) and not its output may pass this many
  characters. Growth is refused *before* the text is built, from the sizes of the operands
  (a list counts its items' sizes, so ``[big] * n`` is refused too); the output is counted
  while it streams. All the text a render grows may add up to ``BUILT_FACTOR`` times the
  limit, so a loop or ``map`` cannot pile up copies that are each under it.
* **max_steps**: loop iterations, calls and filter calls, together.
* **max_time**: seconds of rendering, checked every few steps and at every growth.

Where it renders: a template without loops or calls (the common ``{{ x }}`` prompt)
renders inline: it evaluates each of its expressions once, each bounded by max_length, so it
cannot run long, and a thread hop would cost more than the render. A template that can loop
or call (``{% for %}``, a macro, a method, ``range()``) starts inline too, with a slice of
``INLINE_STEPS`` steps and ``INLINE_SECONDS``; past that it starts again on a thread of its
own pool, so the event loop stays free. There it stops when its node is cancelled (the
node's ``max_time``, a stopped run): the budget is looked at every few steps, and each step
is bounded by the size limits, so the thread ends within a few steps.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, wraps
from string import Formatter
from types import BuiltinMethodType
from typing import Any, TypeGuard

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext, Namespace, markup_join, new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg, generate_lorem_ipsum

#: Dify's TEMPLATE_TRANSFORM_MAX_LENGTH: the longest output of a template-transform node.
TEMPLATE_MAX_LENGTH = 400_000
#: jinja2-mode prompt messages (Dify sets no cap there): above any model's context window.
PROMPT_MAX_LENGTH = 2_000_000
#: Loop iterations, calls and filter calls of one render.
MAX_STEPS = 1_000_000
#: Seconds one render may take: Dify's sandbox worker timeout (SANDBOX_WORKER_TIMEOUT).
MAX_TIME = 15.0
#: All the text one render grows, as a multiple of max_length.
BUILT_FACTOR = 50
#: The largest integer (in bits) ``*`` and ``**`` may build; ~30,000 digits.
MAX_INT_BITS = 100_000

STEPS_ENV = "CELLWIRE_TEMPLATE_MAX_STEPS"
TIME_ENV = "CELLWIRE_TEMPLATE_MAX_TIME"
#: The variable that sets max_length, per kind of field.
LENGTH_ENV = {"template": "CELLWIRE_TEMPLATE_MAX_LENGTH", "prompt": "CELLWIRE_PROMPT_MAX_LENGTH"}
_DEFAULT_LENGTH = {"template": TEMPLATE_MAX_LENGTH, "prompt": PROMPT_MAX_LENGTH}

#: The slice a template that can loop renders in on the event loop before it moves to a thread.
INLINE_STEPS = 1000
INLINE_SECONDS = 0.002
# A cancelled render gets this long to notice before the node's failure is reported anyway.
_STOP_GRACE = 2.0
# Output pieces counted at once.
_OUTPUT_BATCH = 64
# Steps between two looks at the clock (on a thread, and inline).
_CLOCK_EVERY = 64
_INLINE_CLOCK_EVERY = 8


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """How much one render may build, do and take; ``kind`` names the field's kind
    (``template`` or ``prompt``) in messages and picks the variable that sets max_length."""

    max_length: int = TEMPLATE_MAX_LENGTH
    max_steps: int = MAX_STEPS
    max_time: float | None = MAX_TIME
    kind: str = "template"

    @classmethod
    def from_env(cls, kind: str = "template", environ: Mapping[str, str] | None = None
                 ) -> TemplateLimits:
        """The defaults for ``kind``, overridden by ``CELLWIRE_TEMPLATE_MAX_LENGTH`` (or
        ``CELLWIRE_PROMPT_MAX_LENGTH``), ``CELLWIRE_TEMPLATE_MAX_STEPS`` and
        ``CELLWIRE_TEMPLATE_MAX_TIME`` (seconds; 0 for none)."""
        env = os.environ if environ is None else environ
        return _limits(kind, env.get(LENGTH_ENV[kind]), env.get(STEPS_ENV), env.get(TIME_ENV))

    def env_name(self, limit: str) -> str:
        """The environment variable that raises ``limit``."""
        return {"max_length": LENGTH_ENV.get(self.kind, LENGTH_ENV["template"]),
                "max_steps": STEPS_ENV, "max_time": TIME_ENV}[limit]


@lru_cache(maxsize=64)
def _limits(kind: str, length: str | None, steps: str | None, seconds: str | None
            ) -> TemplateLimits:
    return TemplateLimits(_number(LENGTH_ENV[kind], length, _DEFAULT_LENGTH[kind], int),
                          _number(STEPS_ENV, steps, MAX_STEPS, int),
                          _number(TIME_ENV, seconds, MAX_TIME, float) or None, kind)


def _number(name: str, raw: str | None, default: Any, kind: type) -> Any:
    raw = (raw or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{name}={raw!r} is not a non-negative number; set it to e.g. "
                         f"{default}, or unset it")
    return value


class TemplateLimitExceeded(Exception):
    """A render went past one of its :class:`TemplateLimits`; ``limit`` names which."""

    def __init__(self, limit: str, message: str, hint: str):
        super().__init__(message)
        self.limit = limit
        self.hint = hint


class _Stopped(BaseException):
    """The render's node was cancelled: unwinds the render thread (not an ``Exception``, so
    nothing in Jinja catches it)."""


class _Elsewhere(BaseException):
    """An inline render used up its slice: it starts again on a thread."""


class Budget:
    """What one render has used of its limits; checked by the environment's hooks."""

    __slots__ = (
        "_memo",
        "built",
        "deadline",
        "limits",
        "max_built",
        "max_length",
        "max_steps",
        "next_check",
        "shown",
        "slice_end",
        "steps",
        "stopped",
    )

    def __init__(self, limits: TemplateLimits, *, inline: bool = False):
        self.limits = limits
        #: An inline attempt's end: past it (or INLINE_STEPS) the render moves to a thread.
        self.slice_end = time.monotonic() + INLINE_SECONDS if inline else None
        self.max_length = limits.max_length
        self.max_steps = limits.max_steps
        self.max_built = BUILT_FACTOR * limits.max_length
        self.deadline = (time.monotonic() + limits.max_time) if limits.max_time else None
        self.steps = 0
        #: The step at which the limits, the slice and the clock are looked at next.
        self.next_check = min(_INLINE_CLOCK_EVERY if inline else _CLOCK_EVERY,
                              self.max_steps + 1)
        self.built = 0
        #: The size of the values (not text) the output has shown: they become text there.
        self.shown = 0
        self.stopped = False
        # id -> (object, weight): the object is kept so its id is not reused mid-render.
        self._memo: dict[int, tuple[Any, int]] = {}

    def stop(self) -> None:
        """Make the render end at its next step (its node was cancelled)."""
        self.stopped = True

    def step(self) -> None:
        self.steps += 1
        if self.steps >= self.next_check:
            self.checkpoint()

    def checkpoint(self) -> None:
        """The checks behind :meth:`step`, every few steps: max_steps, the slice, the clock."""
        steps = self.steps
        if steps > self.max_steps:
            limits = self.limits
            raise TemplateLimitExceeded(
                "max_steps", f"the template ran more than {self.max_steps} loop iterations and "
                "calls (its max_steps)",
                f"loop over less (a slice, |batch) or set {limits.env_name('max_steps')} higher")
        if self.slice_end is not None and steps > INLINE_STEPS:
            raise _Elsewhere
        self.check_time()
        every = _INLINE_CLOCK_EVERY if self.slice_end is not None else _CLOCK_EVERY
        self.next_check = min(steps + every, self.max_steps + 1)

    def check_time(self) -> None:
        if self.stopped:
            raise _Stopped
        if self.slice_end is not None and time.monotonic() > self.slice_end:
            raise _Elsewhere
        if self.deadline is not None and time.monotonic() > self.deadline:
            limits = self.limits
            raise TemplateLimitExceeded(
                "max_time", f"the template ran longer than {limits.max_time:g} s (its max_time)",
                f"make the template do less, or set {limits.env_name('max_time')} higher")

    def grow(self, size: int) -> None:
        """Allow building a text of ``size`` characters, or refuse it before it exists."""
        limits = self.limits
        if size > self.max_length:
            raise TemplateLimitExceeded(
                "max_length", f"the template would build a text of {size} characters, more "
                f"than the maximum of {self.max_length} (its max_length)",
                "make the template produce less text (e.g. with |truncate or a slice), or set "
                f"{limits.env_name('max_length')} higher")
        self.built += size
        if self.built > self.max_built:
            raise TemplateLimitExceeded(
                "max_length", f"the template built more than {self.max_built} characters in all "
                f"({BUILT_FACTOR} times its max_length of {self.max_length})",
                "build less text in loops and maps, or set "
                f"{limits.env_name('max_length')} higher")
        self.check_time()

    def weight(self, value: Any) -> int:
        """About how many characters ``value`` reads as (a container: its items' weights plus
        one each), counted once per object, and no further than max_length + 1."""
        if isinstance(value, str):
            return len(value)
        if isinstance(value, Namespace):
            value = value._Namespace__attrs
        if not isinstance(value, _CONTAINERS):
            return 1
        found = self._memo.get(id(value))
        if found is not None:
            return found[1]
        cap = self.max_length + 1
        self._memo[id(value)] = (value, cap)  # a cycle reads as too big
        total = len(value)
        items: Iterable[Any] = (itertools.chain.from_iterable(value.items())
                                if isinstance(value, dict) else value)
        for item in items:
            if total >= cap:
                break
            total += self.weight(item)
        total = min(total, cap)
        self._memo[id(value)] = (value, total)
        return total

    def readable(self, value: Any) -> None:
        """Refuse to turn ``value`` into text when that text would pass max_length."""
        if not isinstance(value, str):
            weight = self.weight(value)
            if weight > 1:
                self.check_weight(weight)

    def check_weight(self, size: int) -> None:
        if size > self.max_length:
            self.grow(size)  # raises with the message


_current: ContextVar[Budget | None] = ContextVar("cellwire_template_budget", default=None)
# Constant folding runs filters while compiling; anything bigger than this waits for the
# render, where the render's own limits apply.
_COMPILE_LIMITS = TemplateLimits(max_length=10_000, max_steps=10_000, max_time=None)


def _budget() -> Budget:
    budget = _current.get()
    return Budget(_COMPILE_LIMITS) if budget is None else budget


# -- growth checks --------------------------------------------------------------------------

_SEQUENCES = (str, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (list, tuple, dict, set, frozenset, Namespace)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _printf_size(budget: Budget, template: str, args: Any) -> int:
    """An upper bound of ``template % args``: its text, widths, precisions and arguments."""
    size = len(template)
    values = list(args.values()) if isinstance(args, Mapping) else (
        list(args) if isinstance(args, tuple) else [args])
    star = False
    for match in _PRINTF.finditer(template):
        for part in match.groups():
            if part == "*":
                star = True
            elif part:
                size += int(part)
    for value in values:
        size += budget.weight(value) if not _is_int(value) else 1
        if star and _is_int(value):
            size += abs(value)
    return size


class _Formatter(Formatter):
    """``str.format`` in the sandbox (attribute checks as Jinja's), with the field widths and
    the text built so far counted against max_length."""

    def __init__(self, env: BoundedEnvironment, budget: Budget):
        super().__init__()
        self._env = env
        self._budget = budget
        self._size = 0

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        first, rest = jinja2.sandbox.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = self._env.getattr(obj, key) if is_attr else self._env.getitem(obj, key)
        return obj, first

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = self._budget
        widths = sum(int(d) for d in _DIGITS.findall(format_spec))
        budget.check_weight(self._size + widths + budget.weight(value))
        text = super().format_field(value, format_spec)
        self._size += len(text)
        return text


def _check_str_method(budget: Budget, method: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a growing string method whose result would pass max_length; returns the
    arguments to call it with (``join`` materialises its iterable to measure it)."""
    text, name = method.__self__, method.__name__
    size = None
    if name in ("center", "ljust", "rjust", "zfill") and args and _is_int(args[0]):
        size = max(len(text), args[0])
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if _is_int(tab):
            size = len(text) + text.count("\t" if isinstance(text, str) else b"\t") * max(tab, 0)
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, (str, bytes)) and isinstance(new, (str, bytes)):
            count = text.count(old) if old else len(text) + 1
            if len(args) > 2 and _is_int(args[2]) and args[2] >= 0:
                count = min(count, args[2])
            size = len(text) + count * max(len(new) - len(old), 0)
    elif name == "join" and args:
        items = list(args[0])
        size = sum(budget.weight(item) for item in items) + max(len(items) - 1, 0) * len(text)
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((budget.weight(v) for v in args[0].values()), default=1)
        size = len(text) * max(longest, 1)
    if size is not None and size > len(text):
        budget.grow(size)
    return args


def _sized_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (filter ``name``) counting a step per call, refusing growth past max_length."""
    offset = 1 if _PassArg.from_obj(func) is not None else 0
    signature = inspect.signature(func)
    # Jinja's async-capable filters take an eval context their wrapped signature lacks.
    skip = 1 if offset and _PassArg.from_obj(inspect.unwrap(func)) is None else 0
    pre = _PRE_CHECKS.get(name)
    stringify = name in _STRINGIFY

    @wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        value = args[offset] if len(args) > offset else None
        before = len(value) if isinstance(value, str) else 0
        if pre is not None:
            bound = signature.bind(*args[skip:], **kwargs)
            bound.apply_defaults()
            replaced = pre(budget, bound.arguments)
            if replaced is not None:
                return replaced
            # A check may have read an iterator: call with what it left.
            args, kwargs = (*args[:skip], *bound.args), bound.kwargs
        elif stringify and value is not None and not isinstance(value, str):
            before = budget.weight(value)
            budget.check_weight(before)
        result = func(*args, **kwargs)
        if isinstance(result, str) and len(result) > before:
            budget.grow(len(result))
        return result

    return checked


def _width(budget: Budget, a: Mapping[str, Any]) -> None:
    width = a.get("width")
    if _is_int(width):
        budget.check_weight(width)


def _indent(budget: Budget, a: Mapping[str, Any]) -> None:
    width, text = a.get("width"), a.get("s")
    if not isinstance(text, str):
        budget.readable(text)
        text = str(text)
    step = len(width) if isinstance(width, str) else width if _is_int(width) else 0
    budget.check_weight(step)
    budget.check_weight(len(text) + (text.count("\n") + 1) * max(step, 0))


def _wordwrap(budget: Budget, a: Mapping[str, Any]) -> None:
    text, wrap = a.get("s"), a.get("wrapstring")
    budget.readable(text)
    if isinstance(text, str) and isinstance(wrap, str) and len(wrap) > 1:
        # One break per width characters at most (one per character when words are long).
        width = a.get("width")
        width = width if _is_int(width) else 1
        breaks = len(text) // max(width, 1) + text.count(" ") + 1
        budget.check_weight(len(text) + breaks * len(wrap))


def _replace(budget: Budget, a: Mapping[str, Any]) -> None:
    text, old, new, count = a.get("s"), a.get("old"), a.get("new"), a.get("count")
    budget.readable(text)
    text = str(text)
    old, new = str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if _is_int(count) and count >= 0:
        found = min(found, count)
    budget.check_weight(len(text) + found * max(len(new) - len(old), 0))


def _join(budget: Budget, a: dict[str, Any]) -> None:
    items = a["value"] = list(a["value"]) if not isinstance(a["value"], str) else a["value"]
    separator = a.get("d") or ""
    size = (len(items) if isinstance(items, str)
            else sum(budget.weight(item) for item in items)) + \
        max(len(items) - 1, 0) * budget.weight(separator)
    budget.check_weight(size)


def _format(budget: Budget, a: Mapping[str, Any]) -> None:
    template = a.get("value")
    if isinstance(template, str):
        values = a.get("kwargs") or a.get("args") or ()
        budget.check_weight(_printf_size(budget, template, values))


def _fill(budget: Budget, count: Any, fill: Any) -> None:
    if fill is not None and _is_int(count):
        budget.check_weight(count * max(budget.weight(fill), 1))


def _batch(budget: Budget, a: Mapping[str, Any]) -> None:
    _fill(budget, a.get("linecount"), a.get("fill_with"))


def _slice(budget: Budget, a: Mapping[str, Any]) -> None:
    slices = a.get("slices")
    if _is_int(slices):
        budget.check_weight(slices)
    _fill(budget, slices, a.get("fill_with"))


def _sum(budget: Budget, a: Mapping[str, Any]) -> Any:
    start = a.get("start")
    if not isinstance(start, (list, tuple)):
        return None  # numbers: Python's sum, as Jinja's
    environment, iterable, attribute = a["environment"], a["iterable"], a.get("attribute")
    if attribute is not None:
        iterable = map(jinja2.filters.make_attrgetter(environment, attribute), iterable)
    items = list(iterable)
    budget.check_weight(budget.weight(start) + sum(budget.weight(i) for i in items))
    # Python's sum copies the whole list at each item: quadratic, and in C.
    return type(start)(itertools.chain(start, *items))


_PRE_CHECKS: dict[str, Callable[[Budget, dict[str, Any]], Any]] = {
    "center": _width, "indent": _indent, "wordwrap": _wordwrap, "replace": _replace,
    "join": _join, "format": _format, "batch": _batch, "slice": _slice, "sum": _sum,
}
#: Filters that turn any value into text: a container's size is checked first.
_STRINGIFY = frozenset({
    "string", "tojson", "pprint", "upper", "lower", "title", "capitalize", "trim", "striptags",
    "escape", "e", "forceescape", "urlize", "urlencode", "xmlattr", "truncate", "wordcount",
    "center",
})


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    budget = _budget()
    if _is_int(n) and _is_int(max):
        budget.check_weight(n * max * 16)  # words of at most ~15 characters and a space
    return generate_lorem_ipsum(n, html, min, max)


# -- the environment and its code generator -------------------------------------------------


class _Generator(CodeGenerator):
    """Jinja's code generator, with every loop iteration and every ``~`` counted."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # `for x in environment.loop_items(<iterable>)`, through the sandbox's call().
        counted = node.iter
        if not (isinstance(counted, nodes.Call) and isinstance(counted.node,
                                                                nodes.EnvironmentAttribute)
                and counted.node.name == "loop_items"):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("loop_items"), [counted], [], None,
                                   None, lineno=node.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.join_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        escape = ("context.eval_ctx.autoescape" if frame.eval_ctx.volatile
                  else str(bool(frame.eval_ctx.autoescape)))
        self.write(f"), {escape})")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with each render bounded by the :class:`Budget` it runs under."""

    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, **options: Any):
        super().__init__(finalize=self._finalize, **options)
        self.filters = {name: _sized_filter(name, func) for name, func in self.filters.items()}
        self.globals["lipsum"] = _lipsum

    @staticmethod
    def _finalize(value: Any) -> Any:
        if type(value) not in _SCALARS and isinstance(value, _CONTAINERS):
            # A list, a dict... becomes text here (texts exist already: render counts them).
            budget = _budget()
            weight = budget.weight(value)
            budget.check_weight(weight)
            budget.shown += weight
            if budget.shown > budget.max_length:
                raise _output_too_long(budget)
        return value

    def concat(self, parts: Iterable[str]) -> str:
        """A block's or macro's buffer joined (``{% set x %}``, a macro's text)."""
        pieces = list(parts)
        if len(pieces) > 1:
            _budget().grow(sum(map(len, pieces)))
        return "".join(pieces)

    def join_parts(self, parts: tuple[Any, ...], escape: bool) -> str:
        """``a ~ b``: each part as text, refused when the sum passes max_length."""
        budget = _budget()
        for part in parts:
            budget.readable(part)
        texts = [str(part) for part in parts]
        budget.grow(sum(map(len, texts)))
        if escape:  # inside {% autoescape true %}: Jinja's escaping join
            joined = markup_join(parts)
            budget.check_weight(len(joined))
            return joined
        return "".join(texts)

    def loop_items(self, iterable: Any) -> Iterator[Any]:
        """The items of a ``{% for %}``, one step each."""
        budget = _budget()
        for item in iterable:
            budget.steps += 1  # Budget.step, inlined: this runs once per iteration
            if budget.steps >= budget.next_check:
                budget.checkpoint()
            yield item

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        budget = _budget()
        if operator == "*":
            if _is_int(right) and isinstance(left, _SEQUENCES):
                budget.grow(max(right, 0) * budget.weight(left))
            elif _is_int(left) and isinstance(right, _SEQUENCES):
                budget.grow(max(left, 0) * budget.weight(right))
            elif _is_int(left) and _is_int(right):
                _check_bits(left.bit_length() + right.bit_length())
        elif operator == "+":
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                budget.grow(budget.weight(left) + budget.weight(right))
        elif operator == "**":
            if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
                _check_bits(right * left.bit_length())
        elif operator == "%" and isinstance(left, str):
            budget.grow(_printf_size(budget, left, right))
        return self.binop_table[operator](left, right)

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any,
             **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        if not self.is_safe_callable(obj):
            raise SecurityError(f"{obj!r} is not safely callable")
        if isinstance(obj, LoopContext) and args:
            # `loop(children)` of a recursive loop: its items count as iterations too.
            args = (self.loop_items(args[0]), *args[1:])
        elif isinstance(obj, BuiltinMethodType) and isinstance(obj.__self__, (str, bytes)):
            args = _check_str_method(budget, obj, args, kwargs)
        result = context.call(obj, *args, **kwargs)
        if isinstance(result, str):
            budget.check_weight(len(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not (isinstance(value, BuiltinMethodType) and type(value.__self__) is str
                and value.__name__ in ("format", "format_map")):
            # Markup's escaping format (text marked |safe) and non-format values: Jinja's.
            return super().wrap_str_format(value)
        text: str = value.__self__
        is_map = value.__name__ == "format_map"

        def format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs = args[0]
                args = ()
            budget = _budget()
            result = _Formatter(self, budget).vformat(text, args, kwargs)
            budget.grow(len(result))
            return result

        return format


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitExceeded(
            "max_length", f"the template would build a number of about {bits} bits, more than "
            f"the maximum of {MAX_INT_BITS}", "compute with smaller numbers")


# -- rendering ------------------------------------------------------------------------------


def can_loop(ast: nodes.Template) -> bool:
    """Whether a template can repeat work: it has a ``{% for %}`` or a call (a macro, a
    method, ``range()``, ``loop()``). Without them a render evaluates each expression of the
    template once, each bounded by max_length: it cannot run long enough to need a thread.
    """
    return ast.find(nodes.For) is not None or ast.find(nodes.Call) is not None


def render(template: jinja2.Template, namespace: Mapping[str, Any], budget: Budget) -> str:
    """Render ``template`` over ``namespace`` under ``budget``, counting the output as it
    streams. Raises :class:`TemplateLimitExceeded` and whatever the template raises."""
    token = _current.set(budget)
    try:
        parts: list[str] = []
        size = 0
        # Template.generate, without its generator in the way of every piece; the context
        # reads the namespace and the globals through a view, never a copy of the pool.
        # Without globals=: Jinja keeps their names only for {% import %} (which these
        # templates cannot do) and copying them cost more than the rest of the context.
        context = new_context(template.environment, template.name, template.blocks,
                              Layered(namespace, template.globals),  # type: ignore[arg-type]
                              shared=True)
        stream = template.root_render_func(context)
        try:
            # In batches: the pieces are texts that exist already (values are counted as
            # they are shown), and a batch costs far less than a look at each piece.
            while batch := list(itertools.islice(stream, _OUTPUT_BATCH)):
                size += sum(map(len, batch))
                if size > budget.max_length:
                    raise _output_too_long(budget)
                parts += batch
        except Exception:  # noqa: BLE001 - as Template.generate: re-raised with template lines
            template.environment.handle_exception()
        return "".join(parts)
    finally:
        _current.reset(token)


class Layered(Mapping[str, Any]):
    """Names over names, read through without copying either: a render's namespace is the
    pool (a key per node) under a template's own names, over Jinja's globals. (Jinja's own
    context, and :class:`collections.ChainMap` lookups, cost more as the pool grows.)"""

    __slots__ = ("_over", "_under")

    def __init__(self, over: Mapping[str, Any], under: Mapping[str, Any]):
        self._over = over
        self._under = under

    def __getitem__(self, key: str) -> Any:
        over = self._over
        return over[key] if key in over else self._under[key]

    def __contains__(self, key: object) -> bool:
        return key in self._over or key in self._under

    def __iter__(self) -> Iterator[str]:
        yield from self._over
        yield from (k for k in self._under if k not in self._over)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict[str, Any]:
        # Jinja copies the context this way when it rewrites a template's traceback.
        return dict(self)


def _output_too_long(budget: Budget) -> TemplateLimitExceeded:
    return TemplateLimitExceeded(
        "max_length", f"the output is longer than the maximum of {budget.max_length} "
        "characters (its max_length)", "make the template produce less text (e.g. with "
        f"|truncate), or set {budget.limits.env_name('max_length')} higher")


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # Its own threads: long renders never hold the loop's default executor.
            _pool = ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2),
                                       thread_name_prefix="cellwire-template")
        return _pool


def _render_or_stop(template: jinja2.Template, namespace: Mapping[str, Any],
                    budget: Budget) -> str:
    try:
        return render(template, namespace, budget)
    except _Stopped:
        return ""  # nobody reads it: the caller was cancelled


async def render_bounded(template: jinja2.Template, namespace: Mapping[str, Any],
                         limits: TemplateLimits, *, loops: bool) -> str:
    """Render ``template`` within ``limits``: inline, or (``loops``: see :func:`can_loop`)
    inline for a slice and then on a thread (see the module's text)."""
    if not loops:
        return render(template, namespace, Budget(limits))
    try:
        return render(template, namespace, Budget(limits, inline=True))
    except _Elsewhere:
        return await render_on_thread(template, namespace, Budget(limits))


async def render_on_thread(template: jinja2.Template, namespace: Mapping[str, Any],
                           budget: Budget) -> str:
    """:func:`render` on the template pool; a cancelled caller stops the render and waits
    (briefly) for its thread to let go before the cancellation goes on."""
    # The pool's top level changes as other nodes finish: the thread gets its own copy.
    future = _executor().submit(_render_or_stop, template, dict(namespace), budget)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        budget.stop()
        await asyncio.wait([asyncio.wrap_future(future)], timeout=_STOP_GRACE)
        raise


__all__ = ["BUILT_FACTOR", "INLINE_SECONDS", "INLINE_STEPS", "MAX_STEPS", "MAX_TIME",
           "PROMPT_MAX_LENGTH", "TEMPLATE_MAX_LENGTH", "BoundedEnvironment", "Budget", "Layered",
           "TemplateLimitExceeded", "TemplateLimits", "can_loop", "render", "render_bounded",
           "render_on_thread"]
