"""Every built-in node type is documented in docs/nodes.md."""

from __future__ import annotations

import re
from pathlib import Path

import cellwire  # noqa: F401 - registers the built-in node types
from cellwire.model import registry
from cellwire.nodes.unsupported import NEEDS, UNKNOWN

DOC = Path(__file__).resolve().parents[2] / "docs" / "nodes.md"


def test_every_builtin_node_type_is_documented():
    text = DOC.read_text()
    headings = set(re.findall(r"^### (\S+)$", text, flags=re.MULTILINE))
    kept = re.search(r"## Kept from Dify.*?(?=\n## )", text, flags=re.DOTALL).group(0)
    # Placeholders made for a type some imported file used (a plugin's, a fork's) are not
    # built-ins: earlier tests in this process may have imported such files.
    builtin = [n for n in registry.names() if registry.get(n).run.__module__.startswith("cellwire.")
               and NEEDS.get(n, ("", ""))[1] != UNKNOWN[1]]
    undocumented = [n for n in builtin if n not in headings and f"`{n}`" not in kept]
    assert undocumented == []
