"""What the served-API tests share: workflow files, and a real uvicorn server on 127.0.0.1
guarded by the real KeyGuard, with an admin key for every app."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cellwire.serve.app import create_app
from cellwire.serve.apps import load_apps
from cellwire.serve.auth import KeyGuard
from cellwire.serve.server import BackgroundServer
from cellwire.store import RunStore
from cellwire.store.keys import create_key


@dataclass(frozen=True)
class Served:
    """A running server: its API base URL (``.../v1``), its store, and an admin key."""

    url: str
    store: RunStore
    key: str

    def new_key(self, role: str, app: str | None = None) -> str:
        """A new API key with ``role``, bound to ``app`` (None: every app)."""
        return create_key(self.store, role, app=app)[1]

    def client(self, app: str | None = None, *, key: str | None = None) -> httpx.Client:
        """An httpx client of the API with ``key`` (the admin key), naming ``app``."""
        headers = {"Authorization": f"Bearer {key or self.key}"}
        if app is not None:
            headers["X-Cellwire-App"] = app
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)


GREET = """\
cellwire: 1
name: greet
nodes:
  - id: start
    type: start
    variables:
      - {variable: name, type: text-input, required: true, max_length: 20}
      - {variable: tone, type: select, options: [plain, loud]}
      - {variable: times, type: number}
      - {variable: doc, type: file}
  - id: say
    type: template-transform
    template: "Hello {{ name }}{% if tone == 'loud' %}!{% endif %}"
    variables:
      - {variable: name, value_selector: [start, name]}
      - {variable: tone, value_selector: [start, tone]}
  - id: end
    type: end
    outputs:
      - {variable: greeting, value_selector: [say, output]}
edges:
  - {source: start, target: say}
  - {source: say, target: end}
"""

CHAT = """\
cellwire: 1
name: notes
mode: advanced-chat
nodes:
  - id: start
    type: start
  - id: assign
    type: assigner
    version: '2'
    items:
      - variable_selector: [conversation, turns]
        input_type: constant
        operation: +=
        value: 1
  - id: answer
    type: answer
    answer: 'turn {{#conversation.turns#}}: {{#sys.query#}}'
edges:
  - {source: start, target: assign}
  - {source: assign, target: answer}
conversation_variables:
  - {name: turns, value_type: number, value: 0}
"""

REVIEW = """\
cellwire: 1
name: review
nodes:
  - id: start
    type: start
    variables: [{variable: topic, type: text-input, required: true}]
  - id: ask
    type: human-input
    title: Review
    form_content: "Publish {{#start.topic#}}? {{#$output.note#}}"
    inputs:
      - {type: paragraph, output_variable_name: note}
    user_actions:
      - {id: approve, title: Publish}
      - {id: reject, title: Drop}
    timeout: 1
    timeout_unit: hour
  - id: end
    type: end
    outputs:
      - {variable: action, value_selector: [ask, __action_id]}
      - {variable: note, value_selector: [ask, note]}
edges:
  - {source: start, target: ask}
  - {source: ask, target: end, handle: approve}
  - {source: ask, target: end, handle: reject}
"""

SLOW = """\
cellwire: 1
name: slow
nodes:
  - id: start
    type: start
  - id: wait
    type: code
    code: |
      import time
      def main():
          time.sleep(30)
          return {"x": "late"}
    outputs: {x: {type: string}}
  - id: end
    type: end
    outputs:
      - {variable: x, value_selector: [wait, x]}
edges:
  - {source: start, target: wait}
  - {source: wait, target: end}
"""

FETCH = """\
cellwire: 1
name: fetch
nodes:
  - id: start
    type: start
    variables: [{variable: url, type: text-input, required: true}]
  - id: get
    type: http-request
    method: get
    url: '{{#start.url#}}'
    timeout: {connect: 5, read: 5, write: 5}
  - id: end
    type: end
    outputs:
      - {variable: status, value_selector: [get, status_code]}
edges:
  - {source: start, target: get}
  - {source: get, target: end}
"""

ALL = {"greet": GREET, "notes": CHAT, "review": REVIEW, "slow": SLOW, "fetch": FETCH}
#: The apps a test serves unless it names others.
BASIC = tuple(ALL)


def write_apps(folder: Path, names: tuple[str, ...] = BASIC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.yaml").write_text(textwrap.dedent(ALL[name]))
    return folder


@contextmanager
def serving(path: Path, db: Path, *, trust: bool = True, allow_private_network: bool = False,
            dask: str | None = None, **limits: Any) -> Iterator[Served]:
    """A real server on 127.0.0.1 (a free port) serving ``path``, guarded by API keys in its
    store (``limits``: KeyGuard's; none by default)."""
    store = RunStore(db)
    guard = KeyGuard(store, **{"rate": None, "max_concurrent_runs": None, **limits})
    app = create_app(load_apps(path, trust=trust), store=store, guard=guard, trust=trust,
                     allow_private_network=allow_private_network, dask=dask)
    try:
        with BackgroundServer(app) as server:
            yield Served(f"{server.url}/v1", store, create_key(store, "admin")[1])
    finally:
        store.close()


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    """The ``data:`` events of a finished SSE response, parsed."""
    return [json.loads(line[5:]) for line in response.text.splitlines()
            if line.startswith("data:")]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]

EACH = """\
cellwire: 1
name: each
nodes:
  - {id: start, type: start, variables: [{variable: xs, type: json_object}]}
  - id: each
    type: iteration
    iterator_selector: [start, xs, items]
    output_selector: [twice, output]
  - {id: eachstart, type: iteration-start, parent: each}
  - id: twice
    type: template-transform
    parent: each
    template: "{{ x }}{{ x }}"
    variables: [{variable: x, value_selector: [each, item]}]
  - id: say
    type: llm
    model: {provider: scripted, name: echo}
    prompt_template: [{role: user, text: "count {{#each.output#}}"}]
  - {id: end, type: end, outputs: [{variable: out, value_selector: [each, output]},
                                   {variable: said, value_selector: [say, text]}]}
edges:
  - {source: start, target: each}
  - {source: eachstart, target: twice}
  - {source: each, target: say}
  - {source: say, target: end}
"""

ALL["each"] = EACH

WHERE = """\
cellwire: 1
name: where
nodes:
  - id: start
    type: start
  - id: look
    type: code
    code: |
      import os
      def main():
          return {"pid": os.getpid(), "home": os.path.exists(os.path.expanduser("~/.bashrc"))}
    outputs: {pid: {type: number}, home: {type: boolean}}
  - id: end
    type: end
    outputs:
      - {variable: pid, value_selector: [look, pid]}
edges:
  - {source: start, target: look}
  - {source: look, target: end}
"""

ALL["where"] = WHERE

FLAKY = """\
cellwire: 1
name: flaky
nodes:
  - id: start
    type: start
    variables: [{variable: mark, type: text-input, required: true}]
  - id: once
    type: code
    retry: {max_retries: 2, interval: 0, jitter: false}
    code: |
      import os
      def main(mark):
          if not os.path.exists(mark):
              open(mark, "w").close()
              raise RuntimeError("first try fails")
          return {"ok": "second try"}
    variables: [{variable: mark, value_selector: [start, mark]}]
    outputs: {ok: {type: string}}
  - id: boom
    type: code
    code: |
      def main(ok):
          raise ValueError("always fails")
    variables: [{variable: ok, value_selector: [once, ok]}]
    outputs: {x: {type: string}}
  - id: end
    type: end
    outputs: [{variable: x, value_selector: [boom, x]}]
edges:
  - {source: start, target: once}
  - {source: once, target: boom}
  - {source: boom, target: end}
"""

ALL["flaky"] = FLAKY

GRUMPY = """\
cellwire: 1
name: grumpy
mode: advanced-chat
nodes:
  - id: start
    type: start
  - id: boom
    type: code
    code: |
      def main(q):
          raise ValueError("no answer to " + q)
    variables: [{variable: q, value_selector: [sys, query]}]
    outputs: {x: {type: string}}
  - id: answer
    type: answer
    answer: '{{#boom.x#}}'
edges:
  - {source: start, target: boom}
  - {source: boom, target: answer}
"""

ALL["grumpy"] = GRUMPY
