"""Values that belong to one event loop (connection pools, clients) and close with it.

Connections belong to the loop that opened them, and scripts run each ``cellwire.run`` on a
loop of its own, so a pool or client is made per loop and closed when that loop shuts down
(``asyncio.run`` and ``asyncio.Runner`` close their async generators then). A loop closed
without that shutdown is swept the next time any loop asks for a value.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    def aclose(self) -> Awaitable[None]: ...


T = TypeVar("T", bound=Closable)

#: The keeper of every open value, by loop and id of value: a value lives as long as its
#: loop, also when its owner is dropped without closing it (its sockets would otherwise stay
#: open until the garbage collector finds them).
_KEEPERS: dict[asyncio.AbstractEventLoop, dict[int, AsyncGenerator[None, None]]] = {}


class PerLoop(Generic[T]):
    """``await get()`` is this loop's value, made by ``factory`` on first use and closed
    (``aclose()``) when the loop shuts down."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: dict[asyncio.AbstractEventLoop, T] = {}

    def __len__(self) -> int:
        """How many loops have a value."""
        return len(self._values)

    def current(self) -> T | None:
        """The running loop's value, if it has one."""
        return self._values.get(asyncio.get_running_loop())

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        found = self._values.get(loop)
        if found is not None:
            return found
        await _close_orphans()
        value, keeper = self._make(loop)
        await anext(keeper)
        return value

    def get_nowait(self, usable: Callable[[T], bool] | None = None) -> T:
        """:meth:`get` for synchronous callers on the loop: the keeper that closes the value
        with the loop starts as a task of its own. A value ``usable`` refuses (closed by
        hand, say) is replaced."""
        loop = asyncio.get_running_loop()
        found = self._values.get(loop)
        if found is not None and (usable is None or usable(found)):
            return found
        value, keeper = self._make(loop)
        loop.create_task(_start(keeper))
        return value

    def _make(self, loop: asyncio.AbstractEventLoop) -> tuple[T, AsyncGenerator[None, None]]:
        for old in [k for k in self._values if k.is_closed()]:
            del self._values[old]
        value = self._values[loop] = self._factory()
        # The loop closes its async generators when it shuts down (asyncio.run, Runner):
        # this one's ``finally`` closes the value then, before the loop is gone.
        keeper = self._keep(loop, value)
        _KEEPERS.setdefault(loop, {})[id(value)] = keeper
        return value, keeper

    async def aclose(self) -> None:
        """Close this loop's value; the next :meth:`get` makes a new one."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is not None:
            keeper = _KEEPERS.get(loop, {}).get(id(value))
            await (keeper.aclose() if keeper is not None else value.aclose())

    async def _keep(self, loop: asyncio.AbstractEventLoop, value: T
                    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._values.get(loop) is value:
                del self._values[loop]
            keepers = _KEEPERS.get(loop, {})
            keepers.pop(id(value), None)
            if not keepers:
                _KEEPERS.pop(loop, None)
            await value.aclose()


async def _start(keeper: AsyncGenerator[None, None]) -> None:
    await anext(keeper)


async def _close_orphans() -> None:
    # Values of loops closed without shutting down their generators: close them quietly
    # (their sockets went with the loop).
    for loop in [loop for loop in _KEEPERS if loop.is_closed()]:
        for keeper in list(_KEEPERS.get(loop, {}).values()):
            await keeper.aclose()
