"""Telemetry that sits on top of runs and only reads their events.

``enable_otel()`` sends every run started with the default runtime (``wf.run``,
``%workflow run``, the editor) to OpenTelemetry. Needs the ``otel`` extra:
``pip install 'cellwire[otel]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cellwire.runner import default_runner

if TYPE_CHECKING:
    from cellwire.telemetry.otel import OTelSink

_INSTALL = "pip install 'cellwire[otel]'"
#: The layers enable_otel added to the default runner.
_enabled: list[Any] = []


def _otel() -> Any:
    try:
        from cellwire.telemetry import otel
    except ImportError as exc:
        raise ImportError(f"OpenTelemetry export needs the otel extra ({exc.name} is missing): "
                          f"{_INSTALL}") from None
    return otel


def enable_otel(endpoint: str | None = None, *, tracer_provider: Any = None,
                headers: Mapping[str, str] | None = None, service_name: str = "cellwire",
                capture_content: bool = False) -> OTelSink:
    """Export every later run of the default runtime as OpenTelemetry spans; returns the sink.

    ``endpoint`` is an OTLP/HTTP base URL (``http://localhost:4318``; ``/v1/traces`` is added),
    or pass your own ``tracer_provider``; with neither, the global tracer provider is used.
    Calling it again replaces the previous sink.
    """
    sink = _otel().OTelSink(tracer_provider, endpoint=endpoint, headers=headers,
                            service_name=service_name, capture_content=capture_content)
    disable_otel()
    default_runner().layers.append(sink)
    _enabled.append(sink)
    return sink


def disable_otel() -> None:
    """Stop exporting runs (spans already buffered are still sent)."""
    while _enabled:
        sink = _enabled.pop()
        if sink in default_runner().layers:
            default_runner().layers.remove(sink)
        sink.close()  # its thread delivers what is queued, then ends


__all__ = ["disable_otel", "enable_otel"]
