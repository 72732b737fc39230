"""Batch runs over DataFrames (``map``/``amap``): a bounded asyncio pool on one machine, or
row chunks on a Dask cluster (``client=``); batches kept in the store, resumed and retried."""

from .batch import MapError, amap, aretry_failed, map, retry_failed
from .progress import ProgressBar

__all__ = ["MapError", "ProgressBar", "amap", "aretry_failed", "map", "retry_failed"]
