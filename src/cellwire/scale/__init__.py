"""Batch runs over DataFrames: a bounded asyncio pool on one machine (``map``/``amap``)."""

from .batch import MapError, amap, map

__all__ = ["MapError", "amap", "map"]
