"""Batch runs over DataFrames (``map``/``amap``): a bounded asyncio pool on one machine, or
row chunks on a Dask cluster (``client=``)."""

from .batch import MapError, amap, map

__all__ = ["MapError", "amap", "map"]
