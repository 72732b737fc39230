"""How a batch reports progress: a tqdm bar (rows done, failed, running cost, rows per second)
and the ``progress(done, total)`` callback, fed by one tracker as rows end."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .batch import RowResult

#: ``progress(done, total)``, called after each row ends (each chunk, on Dask).
Progress = Callable[[int, int], None]
#: ``progress=``: True (a bar, the default), False/None (none), or a callback.
ProgressOption = bool | Progress | None


class ProgressBar:
    """A tqdm bar over a batch's rows (a widget in a notebook, text in a terminal), its
    postfix the failed rows and the running cost. ``done``, ``failed`` and ``cost`` are the
    counts it shows."""

    def __init__(self, total: int, *, desc: str | None = None, file: Any = None):
        from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

        self.done = 0
        self.failed = 0
        self.cost = 0.0
        self.unpriced = 0
        self._bar = tqdm(total=total, desc=desc, unit="rows", file=file, dynamic_ncols=True,
                         smoothing=0.1)
        self._show()

    def add(self, rows: Iterable[RowResult]) -> None:
        ended = 0
        for row in rows:
            ended += 1
            self.failed += row.failed
            if math.isnan(row.cost):
                self.unpriced += 1
            else:
                self.cost += row.cost
        self.done += ended
        self._show()
        self._bar.update(ended)

    def _show(self) -> None:
        unknown = f" (+{self.unpriced} unpriced)" if self.unpriced else ""
        self._bar.set_postfix_str(f"failed={self.failed}, cost=${self.cost:.4f}{unknown}",
                                  refresh=False)

    def close(self) -> None:
        self._bar.close()


class Tracker:
    """Counts a batch's ended rows (those resumed from the store first) and tells the bar
    and the callback."""

    def __init__(self, total: int, option: ProgressOption, *, desc: str | None = None,
                 resumed: Iterable[RowResult] = ()):
        if option is not None and not isinstance(option, bool) and not callable(option):
            raise TypeError(f"progress={option!r}: pass True (a progress bar), False (none) "
                            "or a function progress(done, total)")
        self.total = total
        self.callback: Progress | None = option if callable(option) else None
        self.bar = ProgressBar(total, desc=desc) if option is True else None
        self.done = 0
        resumed = list(resumed)
        if resumed:
            self.add(resumed)

    def add(self, rows: Iterable[RowResult | None]) -> None:
        ended = [row for row in rows if row is not None]
        self.done += len(ended)
        if self.bar is not None:
            self.bar.add(ended)
        if self.callback is not None and ended:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["Progress", "ProgressBar", "ProgressOption", "Tracker"]
