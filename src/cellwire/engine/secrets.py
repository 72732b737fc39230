"""Secret values of a run: granted by the user, never taken, never shown.

A workflow only *names* its environment variables. A secret one has a value only when the
user grants it (``Execution(..., secrets={name: value})``; the grant sources live in
:mod:`cellwire.services.secrets`); a node that reads a secret nobody granted fails with
:class:`SecretNotGranted`, naming the variable and how to grant it. Nothing is read from the
process environment here.

Every granted value is then redacted (:class:`Redactor`) from what leaves the run: events
(so traces, the store, the notebook, the CLI), results, errors and the run state's
checkpoints. Redaction also catches the value's common transformed forms (see
:func:`transformed_forms`); it is defence in depth, the grant is the boundary.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from cellwire.model import Workflow

from .events import Event, StreamChunk
from .node import NodeError

REDACTED = "***"
#: Granted values shorter than this are refused: redacting two or three characters would
#: blank ordinary text everywhere, and what was blanked would tell the value.
MIN_SECRET_LENGTH = 4
# Event fields that can carry user data; ids, names and numbers never hold a secret.
_DATA_FIELDS = ("inputs", "outputs", "process_data", "metadata", "error", "text", "reason")


class SecretNotGranted(NodeError):
    """A node read a secret environment variable that the user did not grant to the run."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(
            f"the secret env.{name} was not granted to this run: a workflow that names a "
            "secret does not get its value",
            hint=f"grant it: `cellwire run FILE --secret {name}` (from your secrets file, "
                 f"else ${name}; or --secret {name}=env:OTHER, =file:NAME, "
                 f"=keyring:SERVICE/NAME), or secrets={{'{name}': ...}} / "
                 f"secrets=['{name}'] in Python; `cellwire secret set {name}` keeps it in "
                 "your secrets file",
            error_type="SecretNotGranted", fatal=True)


class Environment(dict[str, Any]):
    """``env.*`` of one run: declared values and granted secrets.

    A secret that was not granted is absent, and reading it raises :class:`SecretNotGranted`
    (through a selector, a ``{{#env.NAME#}}`` reference or Jinja's ``{{ env.NAME }}``);
    ``get`` and iteration simply do not see it, so nothing can hold a placeholder value.
    """

    __slots__ = ("ungranted",)

    def __init__(self, values: Mapping[str, Any], ungranted: Iterable[str] = ()):
        super().__init__(values)
        self.ungranted = frozenset(ungranted)

    def __missing__(self, key: str) -> Any:
        if key in self.ungranted:
            raise SecretNotGranted(key)
        raise KeyError(key)


def environment_values(workflow: Workflow, secrets: Mapping[str, str] | None = None
                       ) -> Environment:
    """``env.*`` for a run: declared values, with ``secrets`` granted over them.

    A secret's value comes from ``secrets`` only, never from the workflow (files never hold
    one) nor from the process environment.
    """
    granted = secrets or {}
    values: dict[str, Any] = {}
    ungranted = []
    for var in workflow.environment:
        if var.name in granted:
            values[var.name] = granted[var.name]
        elif var.value_type == "secret":
            ungranted.append(var.name)
        else:
            values[var.name] = var.value
    return Environment(values, ungranted)


def missing_secrets(workflow: Workflow, granted: Iterable[str] = ()) -> list[str]:
    """Names of the secrets ``workflow`` declares that ``granted`` (names) leaves out."""
    given = set(granted)
    return [v.name for v in workflow.environment
            if v.value_type == "secret" and v.name not in given]


def unknown_grants(workflow: Workflow, granted: Iterable[str]) -> list[str]:
    """Names in ``granted`` that ``workflow`` declares no environment variable for."""
    declared = {v.name for v in workflow.environment}
    return [name for name in granted if name not in declared]


def check_grants(secrets: Mapping[str, str]) -> None:
    """Refuse values that cannot be granted: not text, or too short to redact."""
    for name, value in secrets.items():
        if not isinstance(value, str):
            raise TypeError(f"the secret granted to {name!r} is a {type(value).__name__}, "
                            "not a str")
        if 0 < len(value) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"the secret granted to {name!r} has fewer than {MIN_SECRET_LENGTH} "
                "characters: it could not be told apart from ordinary text, so it could not "
                "be kept out of what the run shows")


# -- redaction -----------------------------------------------------------------------------


def transformed_forms(value: str) -> set[str]:
    """``value`` as a workflow might disguise it; all matched regardless of letter case.

    The value and its reverse (so upper, lower and swapped case too); its hex; its base64
    (standard and URL-safe, with and without padding) and the part of it that stays the
    same wherever the value sits inside a longer base64 text (``user:VALUE`` of HTTP basic
    auth, a JSON document...), for the value, its reverse, upper and lower case; URL, JSON
    and HTML escapes.
    """
    forms = {value, value[::-1], quote(value, safe=""), quote_plus(value), html.escape(value),
             json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    for variant in {value, value[::-1], value.upper(), value.lower()}:
        raw = variant.encode("utf-8")
        forms.add(raw.hex())
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(raw).decode("ascii")
            forms.update((encoded, encoded.rstrip("=")))
            forms.update(_embedded_base64(raw, encode))
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _embedded_base64(raw: bytes, encode: Callable[[bytes], bytes]) -> list[str]:
    # Base64 turns 3 bytes into 4 characters: inside a longer text the value starts at one
    # of 3 offsets, and the characters that depend on its bytes alone are the same whatever
    # comes before or after it.
    found = []
    for offset in range(3):
        text = encode(b"\0" * offset + raw).decode("ascii").rstrip("=")
        head = (0, 2, 3)[offset]
        tail = 1 if (offset + len(raw)) % 3 else 0
        found.append(text[head:len(text) - tail])
    return found


def _trie(words: Iterable[str]) -> str:
    """One regular expression matching any of ``words``, longest first, as a trie: each
    character is looked at once however many words share a prefix."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = []
        for char, child in sorted(node.items()):
            if not char:
                continue
            text = re.escape(char)
            # A chain of single children is plain text: no group, no recursion.
            while len(child) == 1 and "" not in child:
                (char, child), = child.items()
                text += re.escape(char)
            branches.append(text + build(child))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(root)


class Redactor:
    """Replaces every secret value of a run, and its transformed forms, with ``***``.

    Built once per set of values (:func:`redactor`): all forms, lower-cased, go into one
    regular expression shaped as a trie, searched in the lower-cased text, so a string is
    scanned once whatever the number of secrets and forms, and letter case never matters.
    A ``Redactor`` with no values changes nothing and costs nothing.
    """

    __slots__ = ("_find", "_fold", "_given", "longest", "shortest")

    def __init__(self, values: Iterable[str] = ()):
        given = {form for value in values if value for form in transformed_forms(value)}
        forms = {form.lower() for form in given}
        #: Length of the longest form: a stream holds back this much less one (see
        #: :class:`StreamRedactor`).
        self.longest = max(map(len, forms), default=0)
        self.shortest = min(map(len, forms), default=0)
        # Searching lower-cased text is several times faster than re.IGNORECASE; the latter
        # (compiled when first needed) serves the rare text whose lower case has another length.
        self._find = re.compile(_trie(forms)) if forms else None
        self._given = forms | given
        self._fold: re.Pattern[str] | None = None

    def __bool__(self) -> bool:
        return self._find is not None

    def text(self, text: str) -> str:
        """``text`` with every form of every secret replaced."""
        find = self._find
        if find is None or len(text) < self.shortest:
            return text
        lowered = text.lower()
        first = find.search(lowered)
        if first is None:
            return text
        if len(lowered) != len(text):
            if self._fold is None:
                self._fold = re.compile(_trie(self._given), re.IGNORECASE)
            return self._fold.sub(REDACTED, text)
        parts: list[str] = []
        end = 0
        for match in find.finditer(lowered, first.start()):
            parts += (text[end:match.start()], REDACTED)
            end = match.end()
        parts.append(text[end:])
        return "".join(parts)

    def value(self, value: Any) -> Any:
        """``value`` with every secret replaced in every string inside it (keys too)."""
        if self._find is None:
            return value
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self._value(k): self._value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._value(item) for item in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and self.text(str(value)) != str(value):
            return REDACTED
        return value

    def event(self, event: Event) -> Event:
        """A copy of ``event`` whose data fields hold no secret."""
        if self._find is None:
            return event
        names = _data_fields(type(event))
        return dataclasses.replace(event, **{n: self._value(getattr(event, n)) for n in names}) \
            if names else event


_fields_of: dict[type, tuple[str, ...]] = {}


def _data_fields(kind: type) -> tuple[str, ...]:
    names = _fields_of.get(kind)
    if names is None:
        present = {f.name for f in dataclasses.fields(kind)}
        names = _fields_of[kind] = tuple(n for n in _DATA_FIELDS if n in present)
    return names


#: The redactor of a run without secrets.
NO_SECRETS = Redactor()


@functools.lru_cache(maxsize=64)
def _cached(values: frozenset[str]) -> Redactor:
    return Redactor(values)


def redactor(values: Iterable[str]) -> Redactor:
    """The :class:`Redactor` of ``values``, compiled once per distinct set of values."""
    found = frozenset(v for v in values if v)
    return _cached(found) if found else NO_SECRETS


class StreamRedactor:
    """Redacts streamed text (LLM tokens) whose secret may be split across chunks.

    Per stream it holds back the last ``longest - 1`` characters until the next chunk, the
    final chunk or :meth:`flush` (when its node ends), so a value cut in two is whole when
    it is matched.
    """

    __slots__ = ("_held", "_last", "_redactor")

    def __init__(self, redactor: Redactor):
        self._redactor = redactor
        self._held: dict[tuple[str, tuple[str, ...]], str] = {}
        self._last: dict[tuple[str, tuple[str, ...]], StreamChunk] = {}

    def chunk(self, event: StreamChunk) -> StreamChunk | None:
        """The redacted part of ``event`` that can be shown now (None: nothing yet)."""
        key = (event.execution_id, event.selector)
        text = self._redactor.text(self._held.pop(key, "") + event.text)
        self._last.pop(key, None)
        keep = self._redactor.longest - 1
        if not event.is_final and keep > 0:
            text, self._held[key] = text[:-keep], text[-keep:]
            self._last[key] = event
            if not text:
                return None
        return dataclasses.replace(event, text=text)

    def flush(self, execution_id: str) -> list[StreamChunk]:
        """What is still held for the streams of ``execution_id``, as chunks to show."""
        out = []
        for key in [k for k in self._held if k[0] == execution_id]:
            text = self._held.pop(key)
            out.append(dataclasses.replace(self._last.pop(key), text=text))
        return out


__all__ = [
    "MIN_SECRET_LENGTH", "NO_SECRETS", "REDACTED", "Environment", "Redactor",
    "SecretNotGranted", "StreamRedactor", "check_grants", "environment_values",
    "missing_secrets", "redactor", "transformed_forms", "unknown_grants",
]
