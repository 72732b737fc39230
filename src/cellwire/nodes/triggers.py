"""trigger-webhook and trigger-schedule: Dify 1.10's trigger nodes, each the start of a run.

Like a start node, a trigger reads the run's inputs from its own slot (the engine puts them
there for every start-type root).

* **trigger-webhook** (Dify's ``TriggerWebhookNode``): a served app answers
  ``POST /v1/triggers/webhook/{app}`` (:mod:`cellwire.serve.triggers`), which checks the request
  against the node's ``method``, ``content_type``, ``headers``, ``params`` and ``body`` fields and
  starts a run with Dify's inputs (``webhook_data``: method, headers, query_params, body,
  files). The node outputs each configured header (``-`` in its name becomes ``_``), query
  parameter and body field, and ``_webhook_raw``, as Dify's does. Run any other way (a
  notebook, ``cellwire run``), the node takes those fields by name from the inputs.
* **trigger-schedule** (Dify's ``TriggerScheduleNode``): ``cellwire serve`` runs the app on the
  node's schedule (:class:`cellwire.serve.triggers.Scheduler`); ``mode: cron`` gives a
  ``cron_expression``, ``mode: visual`` a ``frequency`` and ``visual_config`` that
  :func:`schedule_cron` turns into one as Dify does; ``timezone`` is an IANA name. The node
  outputs the run's inputs.

Both also output the run's system values as ``sys.<name>``, as Dify's do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from cellwire.engine import NodeContext, NodeResult
from cellwire.model import NodeConfig, node_type

#: Dify's ``SegmentType`` values a webhook field may have (``_WEBHOOK_ALLOWED_TYPES``).
WebhookType = Literal["string", "number", "boolean", "object", "array[string]",
                      "array[number]", "array[boolean]", "array[object]", "file"]
ContentType = Literal["application/json", "multipart/form-data",
                      "application/x-www-form-urlencoded", "text/plain",
                      "application/octet-stream"]
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class WebhookParameter(NodeConfig):
    """A header, query parameter or body field the webhook takes."""

    name: str
    type: WebhookType = "string"
    required: bool = False


class WebhookConfig(NodeConfig):
    """Dify's ``WebhookData``: what requests the webhook accepts, and how it answers them."""

    method: Literal["get", "post", "head", "patch", "put", "delete"] = "get"
    content_type: ContentType = "application/json"
    headers: list[WebhookParameter] = Field(default_factory=list)
    params: list[WebhookParameter] = Field(default_factory=list)
    body: list[WebhookParameter] = Field(default_factory=list)
    status_code: int = 200
    response_body: str = ""
    timeout: int = 30

    @field_validator("method", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class WebhookRequestError(ValueError):
    """A request the webhook does not accept (Dify answers 400 with this message)."""


def sanitized(name: str) -> str:
    """A header's name as a variable: ``X-Event-Id`` -> ``X_Event_Id`` (Dify's
    ``_to_sanitized``)."""
    return name.replace("-", "_")


def content_type_of(headers: Mapping[str, Any]) -> str:
    """The request's media type without parameters; ``application/json`` when it names none
    (Dify's ``_extract_content_type``)."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    value = lowered.get("content-type") or "application/json"
    return value.lower().split(";")[0].strip()


def check_request(config: WebhookConfig, data: dict[str, Any]) -> dict[str, Any]:
    """Dify's checks of a webhook request (``WebhookService._validate_http_metadata`` and
    ``_process_and_validate_data``): the method, the content type, required fields, and each
    field's type (form and query values converted from text). Returns the data with converted
    values; WebhookRequestError says what is wrong."""
    method = str(data.get("method", "")).upper()
    if method != config.method.upper():
        raise WebhookRequestError(
            f"HTTP method mismatch. Expected {config.method.upper()}, got {method}")
    content_type = content_type_of(data.get("headers") or {})
    if content_type != config.content_type:
        raise WebhookRequestError(
            f"Content-type mismatch. Expected {config.content_type}, got {content_type}")
    headers = {k.lower(): v for k, v in (data.get("headers") or {}).items()}
    for header in config.headers:
        if header.required and header.name.lower() not in headers and \
                sanitized(header.name).lower() not in {sanitized(k) for k in headers}:
            raise WebhookRequestError(f"Required header missing: {header.name}")
    result = dict(data)
    result["query_params"] = _fields(data.get("query_params") or {}, config.params,
                                     form=True, what="parameter")
    result["body"] = _body(data.get("body") or {}, config)
    return result


def _body(body: dict[str, Any], config: WebhookConfig) -> dict[str, Any]:
    if config.content_type in ("text/plain", "application/octet-stream"):
        if any(p.required for p in config.body) and not body.get("raw"):
            raise WebhookRequestError(
                f"Required body content missing for {config.content_type} request")
        return body
    fields = [p for p in config.body
              if not (p.type == "file" and config.content_type == "multipart/form-data")]
    return _fields(body, fields, form=config.content_type in FORM_TYPES, what="body parameter")


def _fields(given: Mapping[str, Any], configs: Sequence[WebhookParameter], *, form: bool,
            what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param in configs:
        if param.name not in given:
            if param.required:
                raise WebhookRequestError(f"Required {what} missing: {param.name}")
            continue
        try:
            out[param.name] = (_from_text(given[param.name], param.type) if form
                               else _checked(given[param.name], param.type))
        except ValueError as exc:
            raise WebhookRequestError(
                f"Parameter '{param.name}' validation failed: {exc}") from None
    # Fields the node does not declare pass through as they came.
    return {**{k: v for k, v in given.items() if k not in out}, **out}


_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _from_text(value: Any, kind: str) -> Any:
    if kind == "string":
        return value
    if kind == "number":
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"Cannot convert '{value}' to number") from None
        return int(number) if number.is_integer() else number
    if kind == "boolean":
        found = _BOOLEANS.get(str(value).lower())
        if found is None:
            raise ValueError(f"Cannot convert '{value}' to boolean")
        return found
    raise ValueError(f"Unsupported type '{kind}' for form data parameter")


_ITEM = {"array[string]": str, "array[object]": dict, "array[boolean]": bool}


def _checked(value: Any, kind: str) -> Any:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    ok = {
        "string": lambda v: isinstance(v, str),
        "number": number,
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "file": lambda v: isinstance(v, dict),
        "array[number]": lambda v: isinstance(v, list) and all(number(i) for i in v),
    }.get(kind)
    if ok is None and kind in _ITEM:
        item = _ITEM[kind]
        ok = lambda v: isinstance(v, list) and all(isinstance(i, item) for i in v)
    if ok is not None and not ok(value):
        expected = {"array[string]": "array of strings", "array[number]": "array of numbers",
                    "array[boolean]": "array of booleans",
                    "array[object]": "array of objects"}.get(kind, kind)
        raise ValueError(f"Expected {expected}, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", dict: "dict",
            list: "list"}.get(type(value), type(value).__name__)


def webhook_outputs(config: WebhookConfig, webhook_data: Mapping[str, Any]) -> dict[str, Any]:
    """What the node outputs for a request (Dify's ``_extract_configured_outputs``)."""
    outputs: dict[str, Any] = {}
    headers = webhook_data.get("headers") or {}
    lowered = {str(k).lower(): v for k, v in headers.items()}
    for header in config.headers:
        value = _normalized(headers, header.name)
        if value is None:
            value = _normalized(lowered, header.name.lower())
        outputs[sanitized(header.name)] = value
    query = webhook_data.get("query_params") or {}
    for param in config.params:
        outputs[param.name] = query.get(param.name)
    body = webhook_data.get("body") or {}
    for field in config.body:
        if config.content_type == "text/plain":
            outputs[field.name] = str(body.get("raw", ""))
        elif config.content_type == "application/octet-stream":
            outputs[field.name] = body.get("raw")
        elif field.type == "file":
            outputs[field.name] = (webhook_data.get("files") or {}).get(field.name)
        else:
            outputs[field.name] = body.get(field.name)
    outputs["_webhook_raw"] = dict(webhook_data)
    return outputs


def _normalized(mapping: Mapping[str, Any], key: str) -> Any:
    if key in mapping:
        return mapping[key]
    alternate = key.replace("-", "_") if "-" in key else key.replace("_", "-")
    return mapping.get(alternate)


def _system(ctx: NodeContext) -> dict[str, Any]:
    return {f"sys.{name}": value for name, value in (ctx.pool.outputs("sys") or {}).items()}


@node_type("trigger-webhook", config=WebhookConfig, start=True,
           description="Starts the run from an HTTP request to the app's webhook URL.")
async def run_webhook(ctx: NodeContext) -> NodeResult:
    """The request's configured headers, query parameters and body fields."""
    given: dict[str, Any] = dict(ctx.pool.outputs(ctx.node.id) or {})
    config: WebhookConfig = ctx.config
    data = given.get("webhook_data")
    if isinstance(data, Mapping):
        outputs = webhook_outputs(config, data)
    else:
        # Run without a request: the fields by name (headers by their variable name too).
        outputs = {}
        for header in config.headers:
            name = sanitized(header.name)
            outputs[name] = given.get(name, given.get(header.name))
        for field in [*config.params, *config.body]:
            outputs[field.name] = given.get(field.name)
        outputs["_webhook_raw"] = {}
    return NodeResult(inputs=given, outputs={**outputs, **_system(ctx)})


# -- schedule -------------------------------------------------------------------------------


class VisualConfig(NodeConfig):
    """Dify's ``VisualConfig``: the schedule as its editor shows it."""

    on_minute: int | None = Field(default=0, ge=0, le=59)
    time: str | None = "12:00 AM"
    weekdays: list[Literal["sun", "mon", "tue", "wed", "thu", "fri", "sat"]] | None = None
    monthly_days: list[int | Literal["last"]] | None = None


class ScheduleConfig(NodeConfig):
    """Dify's ``TriggerScheduleNodeData``."""

    mode: Literal["visual", "cron"] = "visual"
    frequency: Literal["hourly", "daily", "weekly", "monthly"] | None = None
    cron_expression: str | None = None
    visual_config: VisualConfig | None = None
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _checked(self) -> ScheduleConfig:
        if self.mode == "cron":
            if not (self.cron_expression or "").strip():
                raise ValueError("mode is 'cron' but cron_expression is missing")
            check_cron(self.cron_expression or "")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone; give e.g. "
                             "'UTC' or 'Europe/Paris'") from None
        return self


def check_cron(expression: str) -> None:
    """ValueError unless ``expression`` is a 5-field cron expression or a predefined one
    (``@daily``...), as Dify's ``calculate_next_run_at`` accepts."""
    from croniter import croniter

    text = expression.strip()
    if len(text.split()) != 5 and not text.startswith("@"):
        raise ValueError(f"cron_expression {expression!r} must have exactly 5 fields (minute "
                         "hour day month weekday) or be @hourly, @daily, @weekly, @monthly")
    if not croniter.is_valid(text):
        raise ValueError(f"cron_expression {expression!r} is not a valid cron expression")


def schedule_cron(config: ScheduleConfig) -> str:
    """The node's schedule as a cron expression (Dify's ``visual_to_cron`` for visual mode);
    ValueError naming the field when it cannot be made."""
    if config.mode == "cron":
        return (config.cron_expression or "").strip()
    visual = config.visual_config or VisualConfig()
    if config.frequency is None:
        raise ValueError("frequency is missing: give hourly, daily, weekly or monthly "
                         "(or mode: cron with a cron_expression)")
    if config.frequency == "hourly":
        if visual.on_minute is None:
            raise ValueError("visual_config.on_minute is required for hourly schedules")
        return f"{visual.on_minute} * * * *"
    if not visual.time:
        raise ValueError(f"visual_config.time is required for {config.frequency} schedules")
    hour, minute = twelve_hour(visual.time)
    if config.frequency == "daily":
        return f"{minute} {hour} * * *"
    if config.frequency == "weekly":
        if not visual.weekdays:
            raise ValueError("visual_config.weekdays is required for weekly schedules")
        days = {"sun": "0", "mon": "1", "tue": "2", "wed": "3", "thu": "4", "fri": "5",
                "sat": "6"}
        return f"{minute} {hour} * * {','.join(sorted(days[d] for d in visual.weekdays))}"
    if not visual.monthly_days:
        raise ValueError("visual_config.monthly_days is required for monthly schedules")
    numbers = sorted({d for d in visual.monthly_days if isinstance(d, int)})
    days_text = [str(d) for d in numbers] + (["L"] if "last" in visual.monthly_days else [])
    return f"{minute} {hour} {','.join(days_text)} * *"


def twelve_hour(text: str) -> tuple[int, int]:
    """``"2:30 PM"`` as ``(14, 30)`` (Dify's ``convert_12h_to_24h``)."""
    parts = text.strip().split()
    if len(parts) != 2 or parts[1].upper() not in ("AM", "PM"):
        raise ValueError(f"visual_config.time {text!r} must look like '2:30 PM'")
    clock, period = parts[0].split(":"), parts[1].upper()
    try:
        hour, minute = int(clock[0]), int(clock[1])
    except (ValueError, IndexError):
        raise ValueError(f"visual_config.time {text!r} must look like '2:30 PM'") from None
    if not (1 <= hour <= 12 and 0 <= minute <= 59) or len(clock) != 2:
        raise ValueError(f"visual_config.time {text!r}: hour 1-12 and minute 0-59")
    if period == "PM" and hour != 12:
        hour += 12
    elif period == "AM" and hour == 12:
        hour = 0
    return hour, minute


@node_type("trigger-schedule", config=ScheduleConfig, start=True,
           description="Starts the run on a cron schedule while the app is served.")
async def run_schedule(ctx: NodeContext) -> NodeResult:
    """The run's inputs (a scheduled run has none), and the system values."""
    given: dict[str, Any] = dict(ctx.pool.outputs(ctx.node.id) or {})
    return NodeResult(inputs=given, outputs={**given, **_system(ctx)})


def response_of(config: WebhookConfig) -> tuple[Any, int]:
    """What the webhook answers a request it accepted: the node's ``response_body`` (JSON when
    it is a JSON object or array, else ``{"message": ...}``) and ``status_code``
    (Dify's ``generate_webhook_response``)."""
    text = config.response_body
    if not text:
        return {"status": "success", "message": "Webhook processed successfully"}, \
            config.status_code
    if text.strip().startswith(("{", "[")):
        try:
            return json.loads(text), config.status_code
        except json.JSONDecodeError:
            pass
    return {"message": text}, config.status_code


__all__ = ["ScheduleConfig", "VisualConfig", "WebhookConfig", "WebhookParameter",
           "WebhookRequestError", "check_cron", "check_request", "content_type_of", "response_of", "sanitized",
           "schedule_cron", "twelve_hour", "webhook_outputs"]
