"""Built-in node types are declared by name and their modules imported on first lookup."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cellwire
from cellwire.model import registry
from cellwire.nodes import BUILTIN
from cellwire.nodes.unsupported import NEEDS, UNKNOWN


def test_the_declared_names_are_what_each_module_registers():
    registry.names()  # imports every declared module
    registered: dict[str, set[str]] = {}
    # Placeholders made for a type some imported file used are not built-ins: earlier tests
    # in this process may have imported such files.
    for name in registry.names():
        if NEEDS.get(name, ("", ""))[1] == UNKNOWN[1]:
            continue
        for kind in (registry._types.get(name), registry._fallbacks.get(name)):
            if kind is not None and kind.run.__module__.startswith("cellwire.nodes."):
                registered.setdefault(kind.run.__module__, set()).add(name)
    for alias, name in registry._aliases.items():
        module = registry.get(name).run.__module__
        if module.startswith("cellwire.nodes."):
            registered[module].add(alias)
    declared = {f"cellwire.nodes.{module}": set(names) for module, names in BUILTIN.items()}
    # A package's types are registered by its submodules (cellwire.nodes.llm.node).
    found = {next(m for m in declared if module == m or module.startswith(m + ".")): names
             for module, names in registered.items()}
    assert found == declared


def run_fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_import_cellwire_loads_no_node_module_engine_or_http():
    loaded = run_fresh("""
        import sys
        import cellwire
        heavy = ("cellwire.nodes.", "cellwire.engine", "cellwire.api", "httpx", "jinja2")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
    """)
    assert loaded == "[]"


def test_a_run_without_http_tools_or_knowledge_loads_none_of_them(tmp_path: Path) -> None:
    """``cellwire run`` of a template workflow: the HTTP client, the tool service and the
    knowledge bases' modules stay unloaded (httpx alone, with rich and pygments, which its
    command line pulls in, was about 80 ms of a 0.5 s command)."""
    example = Path(__file__).parents[2] / "examples" / "hello.yaml"
    loaded = run_fresh(f"""
        import sys
        from cellwire.cli import main
        try:
            main(["run", {str(example)!r}, "--input", "name=Ada", "--json",
                  "--db", {str(tmp_path / "runs.db")!r}])
        except SystemExit as exc:
            assert not exc.code, exc.code
        heavy = ("httpx", "cellwire.services.tools", "cellwire.services.knowledge.base",
                 "lancedb", "numpy")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
    """)
    assert loaded.splitlines()[-1] == "[]"
    assert '"greeting": "Hello, Ada!"' in loaded


def test_an_llm_node_and_the_openai_provider_load_no_numpy():
    """numpy decoded base64 embeddings only, yet the provider imported it for every run with
    an OpenAI-compatible model: about 60 ms of each such ``cellwire run``."""
    loaded = run_fresh("""
        import sys
        from cellwire.model import registry
        from cellwire.services.llm.openai import OpenAIProvider
        registry.get("llm")
        OpenAIProvider("openai", base_url="http://127.0.0.1:9/v1", api_key="test")
        print(sorted(m for m in sys.modules if m.startswith("numpy")))
    """)
    assert loaded == "[]"


def test_a_lookup_imports_only_that_types_module():
    loaded = run_fresh("""
        import sys
        from cellwire.model import registry
        before = registry.generation
        kind = registry.get("variable-assigner")  # an alias
        print(kind.name, registry.generation > before, "cellwire.nodes.llm" in sys.modules)
    """)
    assert loaded == "variable-aggregator True False"


def test_a_type_registered_before_its_builtin_loads_still_replaces_it():
    found = run_fresh("""
        import cellwire
        from cellwire.model import registry

        @cellwire.node_type("answer", outputs=["answer"])
        async def mine(ctx):
            return {"answer": "mine"}

        registry.names()  # imports every built-in module, cellwire.nodes.answer too
        print(registry.get("answer").run is mine)
        registry.unregister("end")  # before its module loaded: it stays unregistered
        print(registry.find("end"))
    """)
    assert found == "True\nNone"


def test_lazy_attributes_of_the_package():
    assert "load" in dir(cellwire) and set(cellwire.__all__) <= set(dir(cellwire))
    for name in cellwire.__all__:
        assert getattr(cellwire, name) is not None
    assert cellwire.load.__module__ == "cellwire.formats.loader"


def test_every_module_imports_first_in_a_fresh_interpreter():
    # With the package loading its parts on first use, a module imported first must not
    # meet a half-initialised one (found: services.trust -> store -> formats -> trust).
    import pkgutil

    # The packages, the top-level modules and the services (whose modules other layers
    # import first): a fresh interpreter each.
    first = [m.name for m in pkgutil.walk_packages(cellwire.__path__, "cellwire.")
             if (m.ispkg or m.name.count(".") == 1 or m.name.startswith("cellwire.services."))
             and not m.name.endswith("__main__")]
    script = textwrap.dedent("""
        import importlib, subprocess, sys
        for name in sys.argv[1:]:
            done = subprocess.run([sys.executable, "-c", f"import {name}"],
                                  capture_output=True, text=True)
            if done.returncode:
                print(name, done.stderr.strip().splitlines()[-1])
    """)
    found = subprocess.run([sys.executable, "-c", script, *first], capture_output=True, check=False,
                           text=True, timeout=600)
    assert found.stdout == "", found.stdout
