"""Node types from other packages arrive through the ``cellwire.nodes`` entry-point group."""

from __future__ import annotations

import sys
import textwrap

import cellwire
from cellwire.model import registry


def test_a_package_registers_node_types_through_its_entry_point(tmp_path, monkeypatch):
    (tmp_path / "acme_nodes.py").write_text(textwrap.dedent('''
        import cellwire

        @cellwire.node_type("acme-shout", outputs=["text"])
        async def shout(ctx):
            """Upper-cases a text."""
            return {"text": ctx.render(ctx.config.text).upper()}
    '''))
    dist = tmp_path / "acme_nodes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-nodes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cellwire.nodes]\nacme = acme_nodes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.delitem(sys.modules, "acme_nodes", raising=False)

    wf = cellwire.Workflow("plugin")
    wf.add_node("start", "start", variables=[{"variable": "name"}])
    wf.add_node("loud", "acme-shout", text="hi {{#start.name#}}", after="start")
    wf.add_node("end", "end", after="loud",
                outputs=[{"variable": "text", "value_selector": ["loud", "text"]}])
    assert cellwire.validate(wf) == []
    assert wf.run(name="ada", store=False).outputs == {"text": "HI ADA"}
    registry.unregister("acme-shout")
