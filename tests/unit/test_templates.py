"""Dify's template semantics, through wf.run and a %%workflow cell.

Plain text fields replace ``{{#node.var#}}`` references and nothing else; Jinja runs only in
jinja2-mode fields. Every expected value below was measured on Dify's engine (graphon 0.8.0,
``graphon.dsl.loads``) with the same DSL; graphon is not needed to run these tests.
"""

from __future__ import annotations

import pytest
from test_llm import SCRIPTED, runtime
from test_magics import cell, shell, wf  # noqa: F401 - shell is a fixture

import cellwire
from cellwire.engine import RunStatus
from cellwire.engine.templates import compile_jinja, markdown_of, text_of
from cellwire.services.llm import ScriptedProvider

#: Start inputs of every case (the types Dify's start node gives them).
VALUES = {"name": "Ada", "n": 2.5, "flag": True,
          "obj": {"k": "v", "l": [1, 2], "b": True, "e": [], "f": 1.0, "o": {"x": [1, "é"]},
                  "lo": [{"a": 1}], "ls": ["a", "é"]}}
PATHS = "|".join(f"{{{{#start.obj.{key}#}}}}" for key in ("k", "l", "b", "e", "f", "o", "lo", "ls"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))


def _start(wf: cellwire.Workflow) -> None:
    wf.add_node("start", "start", variables=[
        {"variable": "name", "type": "text-input"}, {"variable": "n", "type": "number"},
        {"variable": "flag", "type": "checkbox"}, {"variable": "obj", "type": "json_object"}])


def test_the_issue_example_and_jinja_syntax_stay_literal_in_an_answer():
    wf = cellwire.Workflow("chat", mode="advanced-chat")
    _start(wf)
    wf.add_node("answer", "answer", after="start",
                answer="Hi {{#start.name#}}; literal {{ name }}; colon {{ x: 1 }}")
    result = wf.run({"sys.query": "q"}, name="Ada", store=False)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.answer == "Hi Ada; literal {{ name }}; colon {{ x: 1 }}"


def test_an_answer_shows_values_as_dify_does():
    wf = cellwire.Workflow("chat", mode="advanced-chat")
    _start(wf)
    wf.add_node("answer", "answer", after="start",
                answer="n={{#start.n#}}; flag={{#start.flag#}}; " + PATHS)
    result = wf.run({"sys.query": "q"}, **VALUES, store=False)
    assert result.answer == (
        'n=2.5; flag=True; v|- 1\n- 2|True||1.0|{\n  "x": [\n    1,\n    "é"\n  ]\n}'
        "|- {'a': 1}|- a\n- é")


def test_an_llm_basic_prompt_is_plain_text_with_dify_value_text():
    provider = ScriptedProvider()
    wf = cellwire.Workflow("llm")
    _start(wf)
    wf.add_node("llm", "llm", after="start", model=SCRIPTED, prompt_template=[
        {"role": "user", "text": "Hi {{#start.name#}}; literal {{ name }}; colon {{ x: 1 }}; "
                                 "flag={{#start.flag#}}; obj={{#start.obj#}}; missing=["
                                 "{{#start.obj.zzz#}}] [{{#start.obj.k.deeper#}}] " + PATHS}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    result = wf.run(**VALUES, runtime=runtime(provider), store=False)
    assert result.status == RunStatus.SUCCEEDED, result.error
    # Dify's convert_template(...).text; a variable the pool lacks reads as its selector.
    assert provider.calls[0].messages[0].text == (
        "Hi Ada; literal {{ name }}; colon {{ x: 1 }}; flag=True; obj="
        '{"k": "v", "l": [1, 2], "b": true, "e": [], "f": 1.0, "o": {"x": [1, "é"]}, '
        '"lo": [{"a": 1}], "ls": ["a", "é"]}; missing=[start.obj.zzz] [start.obj.k.deeper] '
        'v|[1, 2]|True||1.0|{"x": [1, "é"]}|[{\'a\': 1}]|["a", "é"]')


def test_a_template_transform_is_jinja_over_its_variables():
    wf = cellwire.Workflow("tt")
    _start(wf)
    wf.add_node("tt", "template-transform", after="start",
                template="Hello {{ arg1 }}!{% for k in obj %} [{{ k }}]{% endfor %} "
                         "obj={{ obj }} {{ x | default('d') }}\n",
                variables=[{"variable": "arg1", "value_selector": ["start", "name"]},
                           {"variable": "obj", "value_selector": ["start", "obj"]},
                           {"variable": "x", "value_selector": ["start", "obj", "nothing"]}])
    wf.add_node("end", "end", after="tt",
                outputs=[{"variable": "out", "value_selector": ["tt", "output"]}])
    result = wf.run(name="Ada", obj={"k": "v", "b": True}, store=False)
    # A missing variable is None (not undefined), and the trailing newline goes, as in Dify.
    assert result.outputs == {"out": "Hello Ada! [k] [b] obj={'k': 'v', 'b': True} None"}


def test_an_llm_jinja2_prompt_is_jinja_over_its_jinja2_variables():
    provider = ScriptedProvider()
    wf = cellwire.Workflow("llm")
    _start(wf)
    wf.add_node("llm", "llm", after="start", model=SCRIPTED, prompt_template=[
        {"role": "user", "edition_type": "jinja2", "text": "",
         "jinja2_text": "{% for k, v in obj.items() %}{{ k }}={{ v }};{% endfor %} "
                        "{{ who | upper }} [{{ gone }}]\n"}],
        prompt_config={"jinja2_variables": [
            {"variable": "obj", "value_selector": ["start", "obj"]},
            {"variable": "who", "value_selector": ["start", "name"]},
            {"variable": "gone", "value_selector": ["start", "obj", "nothing"]}]})
    result = wf.run(name="Ada", obj={"k": "v", "b": True}, runtime=runtime(provider),
                    store=False)
    assert result.status == RunStatus.SUCCEEDED, result.error
    # Dify passes a missing jinja2 variable as "" (llm_utils.render_jinja2_message).
    assert provider.calls[0].messages[0].text == "k=v;b=True; ADA []"


def test_a_jinja_syntax_error_names_the_field():
    wf = cellwire.Workflow("tt")
    _start(wf)
    wf.add_node("tt", "template-transform", after="start", template="{% if %}")
    result = wf.run(store=False)
    assert result.status == RunStatus.FAILED
    assert "field 'template'" in result.error and "syntax error on line 1" in result.error


def test_a_workflow_answer_cell_is_plain_and_its_references_make_edges(shell):  # noqa: F811
    cell(shell, "chat start --type start", "[name]", "c1")
    cell(shell, "chat shout --type template-transform", "{{ start.name | upper }}", "c2")
    cell(shell, "chat answer --type answer",
         "Hi {{#start.name#}} ({{#shout.output#}}); literal {{ name }}; {{ x: 1 }}", "c3")
    w = wf(shell, "chat")
    assert sorted((e.source, e.target) for e in w.edges) == [
        ("shout", "answer"), ("start", "answer"), ("start", "shout")]
    result = w.run({"sys.query": "q"}, name="Ada", store=False)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.answer == "Hi Ada (ADA); literal {{ name }}; {{ x: 1 }}"


def test_a_plain_cell_infers_no_edge_from_jinja_syntax(shell):  # noqa: F811
    cell(shell, "w start --type start", "[x]", "c1")
    cell(shell, "w a --type answer", "{{ start.x }}", "c2")
    assert wf(shell, "w").edges == []


def test_files_read_as_nothing_in_text_and_as_links_in_an_answer():
    image = {"type": "image", "transfer_method": "remote_url", "filename": "cat.png",
             "remote_url": "https://example.com/cat.png"}
    doc = {"type": "document", "transfer_method": "remote_url",
           "remote_url": "https://example.com/a.pdf"}
    # Dify: FileSegment.text is "", File.markdown an (image) link.
    assert text_of(image) == text_of([image, doc]) == ""
    assert markdown_of(image) == "![cat.png](https://example.com/cat.png)"
    assert markdown_of([image, doc]) == (
        "![cat.png](https://example.com/cat.png)\n"
        "[https://example.com/a.pdf](https://example.com/a.pdf)")


def test_jinja_templates_are_parsed_once():
    assert compile_jinja("{{ a }}-once") is compile_jinja("{{ a }}-once")
