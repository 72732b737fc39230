"""A wait for a server, said while it lasts: a warning on a logger when nothing has come.

A server that never answers fails at its timeout, which may be minutes away; until then the
user should not stare at a run that looks hung. :class:`LateNotice` logs a warning when
nothing has arrived after a few seconds, then after twice as long each time, naming what is
awaited and when the wait ends. Warnings reach the terminal (standard error) and the notebook
cell without any logging set-up, through Python's last-resort handler, or wherever the
user's logging configuration sends the ``cellwire`` loggers.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

#: The logger of HTTP sent on a workflow's behalf (the http-request node).
LOG = logging.getLogger("cellwire.http")
#: Seconds of silence before the first notice (half the limit when that is sooner).
NOTICE_AFTER = 10.0


class LateNotice:
    """Warn on ``logger`` while a wait of at most ``limit`` seconds for ``what`` lasts:
    first after ``after`` seconds (default: :data:`NOTICE_AFTER`, or half the limit when
    that is sooner), then each time the wait has doubled, until :meth:`stop`. ``setting``
    names what bounds the wait (``timeout.read``), so the notice says how to change it."""

    def __init__(self, what: str, limit: float, setting: str, *,
                 logger: logging.Logger = LOG, after: float | None = None):
        self.what, self.limit, self.setting, self.logger = what, limit, setting, logger
        self.after = min(NOTICE_AFTER, limit / 2) if after is None else after
        self._timer: asyncio.TimerHandle | None = None
        self._started = 0.0
        #: How many notices were logged.
        self.notices = 0

    def start(self) -> Self:
        """Start counting (on the running loop); returns itself."""
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        if 0 < self.after < self.limit:
            self._timer = loop.call_later(self.after, self._notice, self.after)
        return self

    def stop(self) -> None:
        """Something arrived, or the wait ended: no more notices."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _notice(self, waited: float) -> None:
        self.notices += 1
        self.logger.warning("%s: nothing received for %g s; still waiting, up to %g s (%s)",
                            self.what, waited, self.limit, self.setting)
        following = waited * 2
        if following < self.limit:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(self._started + following, self._notice, following)
        else:
            self._timer = None
