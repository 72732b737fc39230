"""What one sandboxed run may use, and their defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Limits of one sandboxed run; the defaults suit data-shaping code.

    The wall-clock limit is the node's ``max_time``, or ``timeout`` when it sets none; the
    engine kills the jail when it passes. The others are rlimits the worker sets on itself
    before any user code runs.
    """

    #: Wall-clock seconds for a node that sets no ``max_time`` (dify-sandbox's default).
    timeout: float = 15.0
    #: CPU seconds per run; ``None``: a second more than the run's wall-clock limit, so
    #: that a single-threaded run meets the clearer wall-clock limit first.
    cpu_seconds: float | None = None
    #: Address space of a Python run, in MiB (an allocation past it is a ``MemoryError``);
    #: Node gets :data:`NODE_HEADROOM_MB` more for the address space V8 reserves up front.
    memory_mb: int = 512
    #: Largest file the code may write, in MiB.
    file_size_mb: int = 16
    #: Size of the private ``/tmp``, in MiB.
    tmp_mb: int = 64
    #: Processes and threads at once, the worker's own included (Node needs about 10). The
    #: memory limit is per process, so a run holds at most ``processes * memory_mb``.
    processes: int = 16
    #: Open file descriptors.
    open_files: int = 256
    #: Largest reply (main()'s JSON and what it printed), in bytes.
    max_output_bytes: int = 16 * MIB
    #: Characters of printed output kept in ``CodeResult.stdout``.
    max_stdout: int = 100_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not value > 0:
                raise ValueError(f"Limits.{f.name} must be positive, not {value!r}")

    def cpu_for(self, timeout: float) -> int:
        """The CPU rlimit of a run whose wall-clock limit is ``timeout``."""
        if self.cpu_seconds is not None:
            return max(1, math.ceil(self.cpu_seconds))
        return math.ceil(timeout) + 1


#: Extra address space for Node: V8 reserves about 1 GiB before running anything.
NODE_HEADROOM_MB = 1024
