"""`cellwire` (the real command line) with one extra layer that marks a point of the run's
event stream, for tests that kill the process there.

``CRASH_AT=N``: at the run's N-th event, print ``CRASH <run_id> <event>`` on stderr; with
``CRASH_PAUSE=1`` the event loop then stops there (the layer sleeps on it), so a kill lands
exactly after that event, with the store's writer thread free to commit what it was given.
``CRASH_AT=0`` prints every event (``EVENT <n> <event>``) and changes nothing.
"""

from __future__ import annotations

import os
import sys
import time

from cellwire.engine.events import Event
from cellwire.engine.layers import Layer
from cellwire.runner import default_runner


class Marker(Layer):
    def __init__(self, at: int, pause: bool):
        self.at = at
        self.pause = pause
        self.seen = 0

    def on_event(self, event: Event) -> None:
        self.seen += 1
        node = getattr(event, "node_id", "")
        if self.at == 0:
            print(f"EVENT {self.seen} {event.name} {node}", file=sys.stderr, flush=True)
        elif self.seen == self.at:
            print(f"CRASH {event.run_id} {event.name} {node}", file=sys.stderr, flush=True)
            if self.pause:
                time.sleep(60)


if __name__ == "__main__":
    default_runner().layers.append(
        Marker(int(os.environ.get("CRASH_AT", "0")), os.environ.get("CRASH_PAUSE") == "1"))
    from cellwire.cli import main

    main(sys.argv[1:])
