"""Node types from other packages arrive through the ``cellwire.nodes`` entry-point group."""

from __future__ import annotations

import importlib
import sys
import textwrap

import cellwire
from cellwire.model import registry
from cellwire.nodes import unsupported


def install_plugin(folder, monkeypatch, module: str) -> None:
    """Make ``folder/module.py`` an installed distribution with a ``cellwire.nodes`` entry
    point, and let the registry look for entry points again."""
    dist = folder / f"{module}-1.0.dist-info"
    dist.mkdir()
    name = module.replace("_", "-")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[cellwire.nodes]\nacme = {module}\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.delitem(sys.modules, module, raising=False)

def test_a_package_registers_node_types_through_its_entry_point(tmp_path, monkeypatch):
    (tmp_path / "acme_nodes.py").write_text(textwrap.dedent('''
        import cellwire

        @cellwire.node_type("acme-shout", outputs=["text"])
        async def shout(ctx):
            """Upper-cases a text."""
            return {"text": ctx.render(ctx.config.text).upper()}
    '''))
    install_plugin(tmp_path, monkeypatch, "acme_nodes")

    wf = cellwire.Workflow("plugin")
    wf.add_node("start", "start", variables=[{"variable": "name"}])
    wf.add_node("loud", "acme-shout", text="hi {{#start.name#}}", after="start")
    wf.add_node("end", "end", after="loud",
                outputs=[{"variable": "text", "value_selector": ["loud", "text"]}])
    assert cellwire.validate(wf) == []
    assert wf.run(name="ada", store=False).outputs == {"text": "HI ADA"}
    registry.unregister("acme-shout")


def test_a_plugin_named_like_a_placeholder_replaces_it(tmp_path, monkeypatch):
    # 'knowledge-index' (a RAG-pipeline node) has a placeholder (nodes/unsupported.py); a
    # plugin that registers a real 'knowledge-index' node type wins over it.
    (tmp_path / "acme_docs.py").write_text(textwrap.dedent('''
        import cellwire

        @cellwire.node_type("knowledge-index", outputs=["text"])
        async def extract(ctx):
            """Extracts documents through ACME's gateway."""
            return {"text": "acme extracted"}
    '''))
    install_plugin(tmp_path, monkeypatch, "acme_docs")

    wf = extractor_workflow()
    try:
        assert cellwire.validate(wf) == []
        assert wf.run(store=False).outputs == {"text": "acme extracted"}
        assert registry.names().count("knowledge-index") == 1
    finally:
        registry.unregister("knowledge-index")
    # Without the plugin the placeholder answers again, saying what the node needs.
    result = extractor_workflow().run(store=False)
    assert not result.ok and "cannot run here" in result.error
    assert "index the chunks into a cellwire knowledge base" in result.error


def test_a_builtin_registered_before_the_placeholders_survives_them():
    @cellwire.node_type("knowledge-index", outputs=["text"])
    async def extract(ctx):
        """A real document extractor, registered before the placeholders are."""
        return {"text": "real extractor"}

    try:
        # Importing the placeholders again registers them after the real type, as a built-in
        # module listed before 'unsupported' in cellwire.nodes would be.
        importlib.reload(unsupported)
        assert registry.get("knowledge-index").run is extract
        assert extractor_workflow().run(store=False).outputs == {"text": "real extractor"}
    finally:
        registry.unregister("knowledge-index")
    assert registry.get("knowledge-index").run.__module__ == unsupported.__name__


def extractor_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("documents")
    wf.add_node("start", "start")
    wf.add_node("extract", "knowledge-index", after="start")
    wf.add_node("end", "end", after="extract",
                outputs=[{"variable": "text", "value_selector": ["extract", "text"]}])
    return wf
