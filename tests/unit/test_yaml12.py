"""parse_yaml builds plain documents from the parser's events in one pass: the same values and
errors as ``yaml.load`` with cellwire's loader, which still builds everything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cellwire.model.yaml12 import _build, _Loader, _Unusual, parse_yaml

ROOT = Path(__file__).resolve().parents[2]

SCALARS = [
    "", "# only a comment", "---\n...\n", "a:", "a: ~", "x", "1", "'1'",
    "[1, 0x1f, 0o17, 017, 1_000, -3, +4, 1:30, 0b101]",
    "[1.5, .inf, -.Inf, .nan, 1e3, 6.8523015e+5, 190:20:30.15, .5]",
    "[true, True, no, yes, on, off, null, Null, '']",
    "[2001-12-14t21:59:43.10-05:00, 2002-12-14, 2001-12-14 21:59:43.10]",
    "{1: a, 2.5: b, null: c, true: d, 2002-12-14: e}",
    "a: 'x'\nb: \"y\\n\"\nc: |\n  lit\n  more\nd: >\n  folded\n  text\n",
    "? a\n: b\n", "a: 1\na: 2\n", "- - - x\n  - y\n- z", "{a: [b, {c: d}], e: {}}",
    "[[], {}, [[]]]", "%YAML 1.1\n---\na: 1",
]
#: What the one-pass builder leaves to yaml.load (after the alias and depth check).
UNUSUAL = ["a: !!str 1", "a: &x 1\nb: *x", "<<: {a: 1}", "a: =", "? [a]\n: b", "a\n---\nb",
           "a: !custom x", "!!set {a, b}"]
#: Errors the parser or a constructor raises the same way on both paths.
BROKEN = ["a: b: c", "- a\nb: c", "a: 2001-13-14", "a: [b", "a: 'b"]


def outcome(read: Any, text: str | bytes) -> tuple[Any, ...]:
    try:
        return ("value", repr(read(text)))
    except Exception as exc:  # noqa: BLE001 - the error is the outcome
        return ("error", type(exc).__name__, str(exc))


def same_as_yaml_load(text: str | bytes) -> bool:
    """Whether ``_build`` read ``text`` itself (asserting it read it as yaml.load does)."""
    built = outcome(lambda t: _build(t, None), text)
    if built[:2] == ("error", "_Unusual"):
        return False
    assert built == outcome(lambda t: yaml.load(t, Loader=_Loader), text)
    return True


@pytest.mark.parametrize("text", SCALARS + BROKEN)
def test_plain_documents_are_built_as_yaml_load_builds_them(text):
    assert same_as_yaml_load(text)


@pytest.mark.parametrize("text", UNUSUAL)
def test_anchors_tags_and_merge_keys_are_left_to_yaml_load(text):
    with pytest.raises(_Unusual):
        _build(text, None)


def test_the_repository_files_read_the_same():
    files = [*ROOT.glob("examples/*.yaml"), *ROOT.glob("notebooks/data/*.yml")]
    assert files and all(same_as_yaml_load(f.read_bytes()) for f in files)


def test_unusual_documents_still_read():
    assert parse_yaml("a: &x {k: 1}\nb: *x\n<<: {c: 2}") == {"a": {"k": 1}, "b": {"k": 1},
                                                             "c": 2}


_KEYS = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none())
_LEAVES = st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=False),
                    st.booleans(), st.none())
_DATA = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(_DATA, st.sampled_from([None, True, False]), st.sampled_from([None, '"', "'"]))
def test_any_dumped_data_reads_as_yaml_load_reads_it(data, flow, style):
    # A forced quote style tags non-strings (!!int "1"): those documents go to yaml.load.
    text = yaml.safe_dump(data, default_flow_style=flow, default_style=style, allow_unicode=True)
    assert same_as_yaml_load(text) or style is not None
