"""Workflow files: the native YAML format, Dify DSL, and loading either by its contents."""

from cellwire.model.yaml12 import parse_yaml

from .loader import FORMATS, detect_format, load, load_data, save
from .native import FORMAT_VERSION, dump, load_native, migrate

__all__ = [
    "FORMATS", "FORMAT_VERSION", "detect_format", "dump", "load", "load_data", "load_native",
    "migrate", "parse_yaml", "save",
]
