"""template-transform, code and answer nodes, through real runs of small workflows."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import cellwire
from cellwire.engine import RunStatus, Runtime
from cellwire.engine.events import NodeSucceeded, StreamChunk
from cellwire.engine.services import CodeFailed, CodeResult
from cellwire.model import NodeConfig, node_type
from cellwire.nodes.code import CODE_MAX_STRING_LENGTH, compile_code
from cellwire.nodes.template_transform import TEMPLATE_TRANSFORM_MAX_LENGTH


class GateConfig(NodeConfig):
    gate: Any = None


@node_type("test-open-gate", config=GateConfig, outputs=["opened"])
async def _open_gate(ctx):
    """Test helper: yields to the loop once, then sets a threading.Event."""
    await asyncio.sleep(0)
    ctx.config.gate.set()
    return {"opened": True}


#: Start inputs of the test workflows: json_object keeps any non-string value as given.
INPUTS = {"name": "text-input", "n": "number", "doc": "json_object", "a": "json_object",
          "b": "json_object", "gate": "json_object"}


def _start(wf: cellwire.Workflow) -> None:
    wf.add_node("start", "start", variables=[{"variable": k, "type": t} for k, t in INPUTS.items()])


def _outputs(result: cellwire.RunResult, node_id: str) -> Any:
    return result.trace.set_index("node_id").loc[node_id, "outputs"]


# -- template-transform ---------------------------------------------------------------------


def _template_wf(template: str, **variables: list[str]) -> cellwire.Workflow:
    wf = cellwire.Workflow("tt")
    _start(wf)
    wf.add_node("t", "template-transform", after="start", template=template,
                variables=[{"variable": k, "value_selector": v} for k, v in variables.items()])
    return wf


async def test_template_renders_named_variables_and_both_reference_forms():
    wf = _template_wf(
        "{{ who }} x{{ count }}; {{ start.name }}/{{#start.name#}}"
        "{% for i in range(count) %}.{% endfor %}",
        who=["start", "name"], count=["start", "n"],
    )
    result = await wf.arun(name="Ada", n=3)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert _outputs(result, "t") == {"output": "Ada x3; Ada/Ada..."}


async def test_template_named_variable_keeps_its_structure():
    wf = _template_wf("{{ doc._id }}:{{ doc['tags'] | join(',') }}", doc=["start", "doc"])
    result = await wf.arun(doc={"_id": 7, "tags": ["a", "b"]})
    assert _outputs(result, "t") == {"output": "7:a,b"}


async def test_template_does_not_evaluate_braces_inside_inserted_values():
    wf = _template_wf("{{ start.n }} said {{#start.name#}}")
    result = await wf.arun(name="{{ start.n }}", n=1)
    assert _outputs(result, "t") == {"output": "1 said {{ start.n }}"}


async def test_template_syntax_error_names_the_field_and_line():
    wf = _template_wf("line one\n{% for x in %}")
    result = await wf.arun(name="a")
    assert result.status == RunStatus.FAILED
    assert result.error_node == "t"
    assert "field 'template'" in result.error
    assert "syntax error on line 2" in result.error


@pytest.mark.parametrize("template", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ start['__class__'] }}",
])
async def test_template_sandbox_blocks_python_internals(template: str):
    result = await _template_wf(template).arun(name="a")
    assert result.status == RunStatus.FAILED
    assert "field 'template'" in result.error
    assert "blocked by the sandbox" in result.error
    assert "access to attribute '__" in result.error


async def test_template_sandbox_blocks_dynamic_attribute_names_too():
    # `attr` with a computed name slips past the static check; the sandbox still refuses it.
    wf = _template_wf("[{{ '' | attr(name) }}]", name=["start", "name"])
    result = await wf.arun(name="__class__")
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert _outputs(result, "t") == {"output": "[]"}


async def test_template_output_is_capped():
    wf = _template_wf("{{ 'x' * size }}", size=["start", "n"])
    ok = await wf.arun(name="a", n=TEMPLATE_TRANSFORM_MAX_LENGTH)
    assert ok.status == RunStatus.SUCCEEDED
    result = await wf.arun(name="a", n=TEMPLATE_TRANSFORM_MAX_LENGTH + 1)
    assert result.status == RunStatus.FAILED
    assert f"more than the maximum of {TEMPLATE_TRANSFORM_MAX_LENGTH}" in result.error
    assert "field 'template'" in result.error


def test_template_references_are_validated():
    wf = _template_wf("{{#start.name#}} {{#start.missing#}}")
    wf.add_node("gone", "template-transform", after="start", template="{{#nowhere.x#}}")
    problems = {(p.node_id, p.message.split("; at run time")[0])
                for p in wf.validate_problems()}
    assert ("t", "node 'start' has no output 'missing'") in problems
    assert any(n == "gone" and "'nowhere'" in m for n, m in problems)


# -- code -----------------------------------------------------------------------------------


def _code_wf(code: str, outputs: dict[str, Any] | None = None, **variables: list[str]):
    wf = cellwire.Workflow("code")
    _start(wf)
    wf.add_node("c", "code", after="start", code_language="python3", code=code,
                variables=[{"variable": k, "value_selector": v} for k, v in variables.items()],
                outputs=outputs or {})
    return wf


SUM_CODE = """\
import math

def main(a, b):
    return {
        "sum": a + b,
        "label": f"{a}+{b}",
        "ok": True,
        "parts": [a, b],
        "info": {"root": math.isqrt(a), "names": ["x"]},
    }
"""

SUM_OUTPUTS = {
    "sum": {"type": "number"}, "label": {"type": "string"}, "ok": {"type": "boolean"},
    "parts": {"type": "array[number]"},
    "info": {"type": "object", "children": {"root": {"type": "number"},
                                            "names": {"type": "array[string]"}}},
}


async def test_code_runs_main_with_the_variables_and_checks_outputs():
    wf = _code_wf(SUM_CODE, SUM_OUTPUTS, a=["start", "a"], b=["start", "b"])
    wf.add_node("end", "end", after="c", outputs=[
        {"variable": "total", "value_selector": ["c", "sum"]},
        {"variable": "root", "value_selector": ["c", "info", "root"]},
    ])
    result = await wf.arun(a=16, b=2)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.outputs == {"total": 18, "root": 4}
    assert _outputs(result, "c") == {"sum": 18, "label": "16+2", "ok": True, "parts": [16, 2],
                                     "info": {"root": 4, "names": ["x"]}}


def test_code_declared_outputs_are_what_validation_checks():
    wf = _code_wf(SUM_CODE, SUM_OUTPUTS, a=["start", "a"], b=["start", "b"])
    wf.add_node("end", "end", after="c",
                outputs=[{"variable": "x", "value_selector": ["c", "total"]}])
    messages = [p.message.split("; at run time")[0] for p in wf.validate_problems()
                if p.node_id == "end"]
    assert messages == ["node 'c' has no output 'total'"]


@pytest.mark.parametrize(("returned", "expected"), [
    ('{"n": "7"}', ("'n'", "number", "str")),
    ('{"n": True}', ("'n'", "number", "bool")),
    ('{"n": 1, "xs": [1, "two"]}', ("'xs[1]'", "number", "outputs.xs")),
    ('{"n": 1, "xs": [], "o": {"k": 1}}', ("'o.k'", "string", "outputs.o.k")),
])
async def test_code_type_mismatch_names_the_output_and_type(returned: str, expected: tuple):
    outputs = {"n": {"type": "number"}, "xs": {"type": "array[number]"},
               "o": {"type": "object", "children": {"k": {"type": "string"}}}}
    if '"o"' not in returned:
        outputs.pop("o")
    if '"xs"' not in returned:
        outputs.pop("xs")
    result = await _code_wf(f"def main():\n    return {returned}\n", outputs).arun()
    assert result.status == RunStatus.FAILED
    for part in expected:
        assert part in result.error, result.error


@pytest.mark.parametrize(("code", "expected"), [
    ("def main():\n    return [1]\n", "main() returned list, not a dict"),
    ("def main():\n    return {}\n", "main() returned no output 'n' (declared as number)"),
    ("def main():\n    return {'n': 1, 'x': 2}\n", "undeclared output(s) x"),
])
async def test_code_result_shape_errors(code: str, expected: str):
    result = await _code_wf(code, {"n": {"type": "number"}}).arun()
    assert result.status == RunStatus.FAILED
    assert expected in result.error


@pytest.mark.parametrize(("value", "expected"), [
    (f"'x' * {CODE_MAX_STRING_LENGTH + 1}", f"more than {CODE_MAX_STRING_LENGTH}"),
    ("2 ** 63", "outside ["),
    ("{'a': {'b': {'c': {'d': {'e': 1}}}}}", "nests deeper than 5 levels"),
])
async def test_code_limits(value: str, expected: str):
    result = await _code_wf(f"def main():\n    return {{'v': {value}}}\n").arun()
    assert result.status == RunStatus.FAILED
    assert expected in result.error
    assert "'v" in result.error


async def test_code_without_declared_outputs_passes_the_dict_through():
    result = await _code_wf("def main(a):\n    return {'x': [a], 'y': None}\n",
                            a=["start", "a"]).arun(a=[1])
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert _outputs(result, "c") == {"x": [[1]], "y": None}


async def test_code_can_use_json_unimported_as_in_dify():
    result = await _code_wf("def main(a):\n    return {'x': json.dumps(a)}\n",
                            a=["start", "a"]).arun(a={"k": 1})
    assert _outputs(result, "c") == {"x": '{"k": 1}'}


async def test_code_exception_shows_the_users_line():
    code = "def helper(x):\n    return 1 / x\n\ndef main(a):\n    y = helper(a)\n    return {}\n"
    result = await _code_wf(code, a=["start", "a"]).arun(a=0)
    assert result.status == RunStatus.FAILED
    assert "ZeroDivisionError: division by zero" in result.error
    assert "line 2, in helper: return 1 / x" in result.error
    assert "field 'code'" in result.error


async def test_code_syntax_error_and_wrong_signature():
    bad = await _code_wf("def main(:\n    pass\n").arun()
    assert "syntax error on line 1" in bad.error and "field 'code'" in bad.error
    wrong = await _code_wf("def main():\n    return {}\n", a=["start", "a"]).arun(a=1)
    assert "main() does not take the inputs given" in wrong.error
    assert "field 'variables'" in wrong.error
    nomain = await _code_wf("x = 1\n").arun()
    assert "defines no main() function" in nomain.error
    missing = await _code_wf("import no_such_pkg_x\n").arun()
    assert "line 1, in <module>: import no_such_pkg_x" in missing.error
    assert "pip install no_such_pkg_x" in missing.error


async def test_code_javascript_is_refused_with_a_porting_hint():
    wf = _code_wf("function main({a}) { return {r: a} }")
    wf.update_node("c", code_language="javascript")
    result = await wf.arun()
    assert result.status == RunStatus.FAILED
    assert "field 'code_language'" in result.error
    assert "JavaScript runs only in the sandbox, and this run has none" in result.error
    assert "python3" in result.error


class RecordingExecutor:
    """Test double of a code executor (the sandbox): records what it is asked to run and
    answers with fixed outputs, or fails the way a sandbox reports the user's error."""

    def __init__(self, outputs=None, error=None):
        self.calls = []
        self.outputs, self.error = outputs, error

    async def run(self, language, code, inputs, *, timeout=None):
        self.calls.append((language, code, dict(inputs), timeout))
        if self.error is not None:
            raise self.error
        return CodeResult(outputs=self.outputs, stdout="printed\n")


async def test_code_runs_on_the_runtimes_executor_when_it_has_one():
    wf = _code_wf("function main({a}) { return {r: a} }", outputs={"r": {"type": "number"}},
                  a=["start", "n"])
    wf.update_node("c", code_language="javascript")
    wf.node("c").max_time = 5
    sandbox = RecordingExecutor(outputs={"r": 41})
    result = await wf.arun(n=1, runtime=Runtime(code=sandbox), store=False)
    assert result.status == RunStatus.SUCCEEDED, result.error
    [(language, code, inputs, timeout)] = sandbox.calls
    assert (language, code, timeout) == ("javascript", "function main({a}) { return {r: a} }", 5)
    assert inputs == {"a": 1}
    row = result.trace.set_index("node_id").loc["c"]
    assert row.outputs == {"r": 41} and row.process_data == {"stdout": "printed\n"}
    # The declared outputs are checked whoever ran the code.
    wrong = await wf.arun(n=1, runtime=Runtime(code=RecordingExecutor(outputs={"r": "x"})),
                          store=False)
    assert wrong.status == RunStatus.FAILED and "'r'" in wrong.error
    failed = CodeFailed("NameError: name 'b' is not defined (line 1, in main)",
                        hint="fix the code at that line", error_type="NameError")
    broken = await wf.arun(n=1, runtime=Runtime(code=RecordingExecutor(error=failed)),
                           store=False)
    assert "field 'code': NameError: name 'b' is not defined (line 1, in main)" in broken.error


def test_code_is_compiled_once_per_text():
    code = "def main():\n    return {'v': 1}\n"
    assert compile_code(code) is compile_code(code)
    assert compile_code(code) is not compile_code(code + "\n")


async def test_code_runs_off_the_event_loop():
    # main() blocks its thread until another branch's node, which needs the event loop,
    # opens the gate. On the loop's own thread it would wait out its 5 s and report False.
    gate = threading.Event()
    wf = _code_wf("import time\n\ndef main(gate):\n    time.sleep(0.2)\n"
                  "    return {'opened': gate.wait(5)}\n",
                  {"opened": {"type": "boolean"}}, gate=["start", "gate"])
    wf.add_node("opener", "test-open-gate", after="start", gate=gate)
    result = await wf.arun(a=1, gate=gate)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert _outputs(result, "c") == {"opened": True}
    finished = [e.node_id for e in result.events if isinstance(e, NodeSucceeded)]
    assert finished.index("opener") < finished.index("c")


# -- answer ---------------------------------------------------------------------------------


async def test_answer_streams_into_the_run_answer():
    wf = cellwire.Workflow("chat", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("upper", "template-transform", after="start", template="{{ sys.query | upper }}")
    wf.add_node("answer", "answer", after="upper",
                answer="You said {{#sys.query#}} ({{#upper.output#}})")
    result = await wf.arun({"sys.query": "hi"})
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.answer == "You said hi (HI)"
    chunks = [e for e in result.events if isinstance(e, StreamChunk)]
    assert [(c.selector, c.text) for c in chunks] == [(("answer", "answer"), "You said hi (HI)")]
    assert _outputs(result, "answer") == {"answer": "You said hi (HI)", "files": []}


async def test_answer_echoes_template_syntax_in_the_query_verbatim():
    wf = cellwire.Workflow("chat", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("answer", "answer", after="start", answer="{{ sys.query }}|{{#sys.query#}}")
    result = await wf.arun({"sys.query": "{{ sys.workflow_id }}"})
    # The answer is plain text: only the Dify reference is replaced, its value is not parsed.
    assert result.answer == "{{ sys.query }}|{{ sys.workflow_id }}"


async def test_answer_keeps_jinja_syntax_literal_instead_of_failing():
    wf = cellwire.Workflow("chat", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("answer", "answer", after="start", answer="{% if %}{{ x: 1 }} {{#sys.query#}}")
    result = await wf.arun({"sys.query": "hi"})
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.answer == "{% if %}{{ x: 1 }} hi"
