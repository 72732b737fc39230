"""Secrets come from the environment at run time and never reach a trace, the store or a result."""

from __future__ import annotations

import json

import cellwire
from cellwire.engine import Runtime
from cellwire.engine.secrets import missing_secrets
from cellwire.model import EnvironmentVariable
from cellwire.store import RunStore

SECRET = "sk-test-0123456789abcdef"


def _leaky_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("leaky", environment=[
        EnvironmentVariable(name="API_KEY", value_type="secret"),
        EnvironmentVariable(name="REGION", value="eu"),
    ])
    wf.add_node("start", "start")
    wf.add_node("show", "template-transform", after="start",
                template="key={{#env.API_KEY#}} region={{#env.REGION#}}")
    wf.add_node("end", "end", after="show", outputs=[
        {"variable": "text", "value_selector": ["show", "output"]},
        {"variable": "raw", "value_selector": ["env", "API_KEY"]},
    ])
    return wf


async def test_secret_is_read_from_the_environment_and_redacted_everywhere(tmp_path):
    wf = _leaky_workflow()
    store = RunStore(tmp_path / "runs.db")
    runtime = Runtime(environ={"API_KEY": SECRET}, layers=[store.sink])
    result = await wf.arun(runtime=runtime, store=False)
    assert result.status == cellwire.RunStatus.SUCCEEDED
    # The node saw the real value (the run works) but nothing shown holds it.
    assert result.outputs == {"text": "key=*** region=eu", "raw": "***"}
    assert SECRET not in repr([e.as_dict() for e in result.events])
    assert SECRET not in result.trace.to_json(date_format="iso")
    stored = json.dumps(store.run(result.run_id), default=str) + store.trace(result.run_id).to_json(date_format="iso")
    assert SECRET not in stored and "key=***" in stored
    store.close()


def test_missing_secrets_are_named():
    wf = _leaky_workflow()
    assert missing_secrets(wf, environ={}) == ["API_KEY"]
    assert missing_secrets(wf, environ={"API_KEY": "x"}) == []


def test_exports_never_hold_secret_values():
    wf = _leaky_workflow()
    wf.environment[0].value = SECRET
    assert SECRET not in cellwire.dump(wf)
