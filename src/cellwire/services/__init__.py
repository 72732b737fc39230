"""The outside world behind small interfaces: LLM providers, knowledge bases, tools, files.

Services import only :mod:`cellwire.model` types, never the engine: a node adapts a service's
errors and results to the engine's terms.
"""
