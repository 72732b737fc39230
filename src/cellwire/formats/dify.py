"""Dify DSL: import an app exported by Dify, and export a workflow Dify can import.

``load_dify`` is the hook :func:`cellwire.load` calls for Dify files; ``import_dify`` also
returns the warnings (nodes that need something cellwire does not have here).
"""

from .dify_export import DSL_VERSION, DSL_VERSIONS, dump_dify, export_dify
from .dify_import import DifyImport, import_dify, load_dify, unsupported_problems

__all__ = [
    "DSL_VERSION", "DSL_VERSIONS", "DifyImport", "dump_dify", "export_dify", "import_dify",
    "load_dify", "unsupported_problems",
]
