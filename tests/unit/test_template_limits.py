"""Jinja templates within limits: size, work and time, off the event loop when they loop.

Each finding of the trust review has a run here: a huge multiplication, nested ranges, a big
output, and a template that outlives its node's max_time while the rest of the run goes on.
"""

from __future__ import annotations

import asyncio
import resource
import time

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

import cellwire
from cellwire.engine import RunStatus
from cellwire.engine.bounded_jinja import MAX_TIME, TemplateLimitExceeded, TemplateLimits, can_loop
from cellwire.engine.context import VariablePool
from cellwire.engine.templates import render_jinja
from cellwire.model import NodeConfig, node_type


class TickerConfig(NodeConfig):
    ticks: int = 10


@node_type("test-template-ticker", config=TickerConfig, outputs=["ticks", "at"])
async def _ticker(ctx):
    """Test helper: sleeps in small steps on the event loop, counting them."""
    done = 0
    for _ in range(ctx.config.ticks):
        await asyncio.sleep(0.02)
        done += 1
    return {"ticks": done, "at": time.monotonic()}


def _wf(template: str, **node: object) -> cellwire.Workflow:
    wf = cellwire.Workflow("limits")
    wf.add_node("start", "start", variables=[{"variable": "n", "type": "number"},
                                             {"variable": "doc", "type": "json_object"}])
    wf.add_node("t", "template-transform", after="start", template=template, **node)
    return wf


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_a_huge_multiplication_is_refused_before_it_is_built():
    before = _peak_rss_mb()
    result = await _wf("{{ ('a' * 1500000000)|length }}").arun(n=1, store=False)
    assert result.status == RunStatus.FAILED
    assert "node 't'" in result.error and "field 'template'" in result.error
    assert "1500000000 characters, more than the maximum of 400000 (its max_length)" in \
        result.error
    assert "CELLWIRE_TEMPLATE_MAX_LENGTH" in result.error  # the fix
    # The 1.5 GB string never existed.
    assert _peak_rss_mb() - before < 200


async def test_nested_ranges_stop_at_max_steps():
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    result = await _wf(template).arun(n=1, store=False)
    assert result.status == RunStatus.FAILED
    assert "more than 1000000 loop iterations and calls (its max_steps)" in result.error
    assert "field 'template'" in result.error and "CELLWIRE_TEMPLATE_MAX_STEPS" in result.error


async def test_a_big_output_is_stopped_while_it_streams():
    # Every piece is small; together they pass the template-transform cap.
    result = await _wf("{% for i in range(start.n) %}{{ start.doc.chunk }}{% endfor %}").arun(
        n=500, doc={"chunk": "x" * 1000}, store=False)
    assert result.status == RunStatus.FAILED
    assert "the output is longer than the maximum of 400000 characters" in result.error
    ok = await _wf("{% for i in range(start.n) %}{{ start.doc.chunk }}{% endfor %}").arun(
        n=400, doc={"chunk": "x" * 1000}, store=False)
    assert ok.status == RunStatus.SUCCEEDED, ok.error


#: 300,000 rounds of ~100 us, three steps each: far past a second, well within max_steps.
SLOW = ("{% for i in range(1000) %}{% for j in range(300) %}{{ start.doc.numbers|sort|length }}"
        "{% endfor %}{% endfor %}")


async def test_a_slow_template_respects_the_nodes_max_time_and_the_run_carries_on():
    wf = _wf(SLOW, max_time=1, error_strategy="default-value",
             default_value={"output": "fallback"})
    wf.add_node("ticker", "test-template-ticker", after="start", ticks=20)
    wf.add_node("end", "end", after=["t", "ticker"], outputs=[
        {"variable": "text", "value_selector": ["t", "output"]},
        {"variable": "ticks", "value_selector": ["ticker", "ticks"]}])
    loop_ticks = 0

    async def watch() -> None:
        nonlocal loop_ticks
        while True:
            await asyncio.sleep(0.01)
            loop_ticks += 1

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    result = await wf.arun(n=1, doc={"numbers": list(range(20000))}, store=False)
    watcher.cancel()
    took = time.monotonic() - started
    assert result.status == RunStatus.PARTIAL_SUCCEEDED, result.error
    # The template was stopped by the node's max_time, not by its own 15 s limit...
    rows = result.trace.set_index("node_id")
    assert "timed out after 1 s" in rows.loc["t", "error"]
    assert 1 <= took < MAX_TIME
    # ...while the event loop stayed free and the other branch ran to its end.
    assert result.outputs == {"text": "fallback", "ticks": 20}
    # 10 ms ticks over at least a second: the render thread shares the GIL, so fewer than
    # 100, but never none, as when a render held the loop.
    assert loop_ticks >= 10
    # The render thread let go: the process is idle now.
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert (after.ru_utime - cpu.ru_utime) < 0.25


async def test_a_template_stops_at_its_own_max_time(monkeypatch):
    monkeypatch.setenv("CELLWIRE_TEMPLATE_MAX_TIME", "0.3")
    result = await _wf(SLOW).arun(n=1, doc={"numbers": list(range(20000))}, store=False)
    assert result.status == RunStatus.FAILED
    assert "the template ran longer than 0.3 s (its max_time)" in result.error
    assert "CELLWIRE_TEMPLATE_MAX_TIME" in result.error


async def test_a_jinja_prompt_is_bounded_too():
    wf = cellwire.Workflow("prompt")
    wf.add_node("start", "start", variables=[{"variable": "n", "type": "number"}])
    wf.add_node("llm", "llm", after="start", model={"provider": "scripted", "name": "echo"},
                prompt_template=[{"role": "user", "edition_type": "jinja2", "text": "",
                                  "jinja2_text": "{{ 'ab' * 2000000 }}"}])
    result = await wf.arun(n=1, store=False)
    assert result.status == RunStatus.FAILED
    assert "field 'prompt_template[0].jinja2_text'" in result.error
    assert "more than the maximum of 2000000" in result.error
    assert "CELLWIRE_PROMPT_MAX_LENGTH" in result.error


# -- what each limit catches (rendered directly, with small limits) ------------------------

SMALL = TemplateLimits(max_length=1000, max_steps=5000, max_time=None)
POOL = VariablePool({"start": {"name": "Ada", "big": "x" * 2000, "rows": [[1, 2], [3]]}})


@pytest.mark.parametrize(("template", "limit"), [
    ("{{ 'a'|center(10 ** 9) }}", "max_length"),
    ("{{ 'a'|indent(10 ** 9, true) }}", "max_length"),
    ("{{ ('a\nb' * 20)|indent('x' * 100, true) }}", "max_length"),
    ("{{ 'a b c'|wordwrap(1, wrapstring='x' * 900) }}", "max_length"),
    ("{{ ('a' * 500)|replace('a', 'bbb') }}", "max_length"),
    ("{{ '%1000000000s' % 'a' }}", "max_length"),
    ("{{ '%*s' % (10 ** 9, 'a') }}", "max_length"),
    ("{{ '{:>1000000000}'.format('a') }}", "max_length"),
    ("{{ '{0}{0}'.format(start.big) }}", "max_length"),
    ("{{ 'x'.ljust(10 ** 9) }}", "max_length"),
    ("{{ ','.join(['a' * 600, 'b' * 600]) }}", "max_length"),
    ("{{ 'a' ~ start.big }}", "max_length"),
    ("{{ start.big + '!' }}", "max_length"),
    ("{% set x = ['a' * 100] * 9 %}{% set y = [x, x, x, x] %}{{ y }}", "max_length"),
    ("{% set x = ['a' * 100] * 9 %}{{ [x, x, x, x]|tojson }}", "max_length"),
    ("{{ [1] * 10 ** 9 }}", "max_length"),
    ("{{ 7 ** 1000000 }}", "max_length"),
    ("{{ range(900)|batch(10 ** 9, 'x')|list }}", "max_length"),
    ("{{ range(9)|slice(10 ** 9)|list }}", "max_length"),
    ("{{ range(9)|slice(3, 'x' * 600)|list }}", "max_length"),
    ("{{ [[1] * 600, [2] * 600]|sum(start=[]) }}", "max_length"),
    ("{{ lipsum(1000) }}", "max_length"),
    ("{{ range(500)|map('center', 900)|join }}", "max_length"),
    (("{% set ns = namespace(s='a') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}{{ ns.s|length }}"), "max_length"),
    ("{% set x %}{{ start.big }}{{ start.big }}{% endset %}{{ x|length }}", "max_length"),
    ("{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", "max_steps"),
    ("{% for i in range(100000) if false %}{% endfor %}", "max_steps"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(30) }}",
     "max_steps"),
    (("{% for r in [range(3000), range(3000)] recursive %}{{ loop(r) if r is not number }}"
     "{% endfor %}"), "max_steps"),
    ("{{ range(3000)|map('string')|map('upper')|join }}", "max_steps"),
])
async def test_each_limit_catches(template, limit):
    with pytest.raises(TemplateLimitExceeded) as caught:
        await render_jinja(template, POOL, limits=SMALL)
    assert caught.value.limit == limit


async def test_growth_from_a_long_input_that_does_not_grow_is_allowed():
    # Reading or shrinking a value longer than max_length is fine; growing it is not.
    text = await render_jinja("{{ start.big|upper|length }} {{ start.big|truncate(5) }}",
                              POOL, limits=SMALL)
    assert text == "2000 xx..."


# -- what stays the same -------------------------------------------------------------------

SAME = [
    "{{ start.name }}!",
    ("{% for r in start.rows %}{{ loop.index }}/{{ loop.length }}:{{ r|join(',') }}"
     "{{ ';' if not loop.last }}{% endfor %}"),
    ("{% for r in start.rows recursive %}[{% if r is iterable %}{{ loop(r) }}{% else %}{{ r }}"
     "{% endif %}]{% endfor %}"),
    "{% for i in range(5) if i is odd %}{{ i }}{% else %}none{% endfor %}",
    ("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}"
     "{{ ns.n }}"),
    "{{ 'a' ~ 1 ~ [2] }} {{ 'x' * 3 }} {{ [1] + [2] }} {{ 2 ** 10 }} {{ '%s=%d' % ('a', 1) }}",
    "{{ '{}-{name}'.format(1, name=start.name) }} {{ '{a}'.format_map({'a': 2}) }}",
    ("{{ 'a b'|center(9) }}|{{ 'l1\nl2'|indent(2, true) }}|{{ 'ab'|replace('b', 'cc') }}"
     "|{{ [[1], [2]]|sum(start=[]) }}|{{ range(5)|batch(2, 0)|list }}|{{ [1, 2]|sum }}"
     "|{{ range(7)|slice(3, 'x')|list }}|{{ ['a', 'b']|join('-') }}|{{ '%s'|format(1) }}"),
    ("{% macro m(x) %}<{{ x }}{{ caller() if caller }}>{% endmacro %}{{ m(1) }}"
     "{% call m(2) %}c{% endcall %}"),
    "{% set x %}a{{ start.name }}b{% endset %}{{ x }}{% filter upper %}{{ x }}{% endfilter %}",
    "{% autoescape true %}{{ '<' ~ start.name }}{{ '<b>' }}{% endautoescape %}",
    "{{ start.name.upper() }} {{ 'a,b'.split(',') }} {{ 'ab'.ljust(4, '.') }}",
    "{{ dict(a=1)|tojson }} {{ start.rows|tojson }} {{ start.rows|pprint }}",
    "{{ ''.__class__ }}{{ start.name.__len__ }}",
    "{{ dict(obj=1, context=2, self=3)|tojson }}",
    "{{ start.missing }}|{{ start.missing|default('d') }}",
    "line\n",
]


#: What Jinja's sandbox refuses, ours refuses the same way.
REFUSED = [
    "{{ [].append(1) }}",
    "{{ {}.update(a=1) }}",
    "{{ start.name.format.__globals__ }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ ''.mro() }}",
    "{{ start.name|attr('__class__') }}",
]


async def _outcome(render):
    try:
        return await render() if asyncio.iscoroutinefunction(render) else render()
    except Exception as exc:  # noqa: BLE001 - the outcome under test
        return type(exc).__name__


@pytest.mark.parametrize("template", SAME + REFUSED)
async def test_renders_as_jinjas_sandbox_does(template):
    plain = ImmutableSandboxedEnvironment(autoescape=False).from_string(template)

    async def ours():
        return await render_jinja(template, POOL)

    assert await _outcome(ours) == await _outcome(lambda: plain.render(POOL.namespace()))


@pytest.mark.parametrize(("template", "loops"), [
    ("{{ x }}", False),
    ("Hello {{ a.b|upper }}{% if c %}{{ d ~ 'e' }}{% endif %}{{ n * 2 }}", False),
    ("{% for i in x %}{% endfor %}", True),
    ("{{ x.items() }}", True),
    ("{{ range(3)|list }}", True),
    ("{% macro m() %}{% endmacro %}{{ m() }}", True),
])
def test_which_templates_can_loop(template, loops):
    # Only these may leave the event loop; the others render inline (see can_loop).
    assert can_loop(jinja2.Environment().parse(template)) is loops


def test_limits_come_from_the_environment():
    env = {"CELLWIRE_TEMPLATE_MAX_LENGTH": "10", "CELLWIRE_PROMPT_MAX_LENGTH": "20",
           "CELLWIRE_TEMPLATE_MAX_STEPS": "30", "CELLWIRE_TEMPLATE_MAX_TIME": "0"}
    assert TemplateLimits.from_env("template", env) == TemplateLimits(10, 30, None, "template")
    assert TemplateLimits.from_env("prompt", env).max_length == 20
    assert TemplateLimits.from_env("prompt", {}) == TemplateLimits(2_000_000, kind="prompt")
    with pytest.raises(ValueError, match="CELLWIRE_TEMPLATE_MAX_STEPS='many'"):
        TemplateLimits.from_env("template", {"CELLWIRE_TEMPLATE_MAX_STEPS": "many"})
