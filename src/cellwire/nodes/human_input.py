"""human-input: pause the run until a person answers a form, then branch on their action.

Dify's fields: ``form_content`` (Markdown with ``{{#node.var#}}`` references, and
``{{#$output.NAME#}}`` where the answer's values go), ``inputs`` (typed fields, each written to
its ``output_variable_name``, with a constant or variable ``default``), ``user_actions`` (the
buttons; each id is a branch), and ``timeout`` in ``timeout_unit`` (hours or days) after which
an unanswered form leaves through the ``__timeout`` branch. ``delivery_methods`` are kept for
Dify: here the form is answered from Python, the command line or the editor.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cellwire.engine import NodeContext, NodeResult
from cellwire.engine.forms import (
    FIELD_TYPES,
    TIMEOUT_HANDLE,
    Form,
    FormAction,
    FormField,
    PauseRequested,
    filled,
    new_token,
)
from cellwire.model import NodeConfig, node_type

from .config_checks import unique

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNIT_SECONDS = {"hour": 3600.0, "day": 86400.0}
#: The outputs every answer (and a timeout) writes besides the form's own inputs (Dify's).
SPECIAL_OUTPUTS = ("__action_id", "__action_value", "__rendered_content")


class ValueSource(NodeConfig):
    """A default or a list of options: a constant, or a variable of the run."""

    type: Literal["constant", "variable"] = "constant"
    selector: list[str] = Field(default_factory=list)
    value: Any = None

    @model_validator(mode="after")
    def _selector_given(self) -> ValueSource:
        if self.type == "variable" and len(self.selector) < 2:
            raise ValueError(f"a variable source needs a selector of at least two parts, e.g. "
                             f"['start', 'name'], not {self.selector}")
        return self


class FormInput(NodeConfig):
    type: str = "paragraph"
    output_variable_name: str
    default: ValueSource | None = None
    #: Older Dify exports call the default a placeholder.
    placeholder: ValueSource | None = None
    #: The options of a ``select`` input.
    option_source: ValueSource | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in FIELD_TYPES:
            raise ValueError(f"input type {value!r} is not one of "
                             f"{', '.join(sorted(FIELD_TYPES))}")
        return value


class UserAction(NodeConfig):
    id: str = Field(min_length=1, max_length=20)
    title: str = Field(default="", max_length=100)
    button_style: str = "default"

    @field_validator("id")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"action id {value!r} is not an identifier: use letters, digits "
                             "and underscores, not starting with a digit")
        return value


class HumanInputConfig(NodeConfig):
    delivery_methods: list[Any] = Field(default_factory=list)
    form_content: str = ""
    inputs: list[FormInput] = Field(default_factory=list)
    user_actions: list[UserAction] = Field(default_factory=list)
    timeout: int = Field(default=36, ge=0)
    timeout_unit: Literal["hour", "day"] = "hour"

    @field_validator("user_actions")
    @classmethod
    def _unique_actions(cls, actions: list[UserAction]) -> list[UserAction]:
        unique([a.id for a in actions], "action id")
        return actions

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[FormInput]) -> list[FormInput]:
        unique([i.output_variable_name for i in inputs], "output_variable_name")
        return inputs



def _references(config: HumanInputConfig) -> list[tuple[str, list[str]]]:
    found = []
    for i, form_input in enumerate(config.inputs):
        for name in ("default", "placeholder", "option_source"):
            source = getattr(form_input, name)
            if source is not None and source.type == "variable":
                found.append((f"inputs[{i}].{name}.selector", source.selector))
    return found


@node_type(
    "human-input", config=HumanInputConfig,
    handles=lambda c: [*(a.id for a in c.user_actions), TIMEOUT_HANDLE],
    outputs=lambda c: [*(i.output_variable_name for i in c.inputs), *SPECIAL_OUTPUTS],
    references=_references,
)
async def run(ctx: NodeContext) -> NodeResult:
    """Wait for a person: the run pauses with a form; their action picks the branch."""
    config: HumanInputConfig = ctx.config
    if ctx.frame.container_id is not None:
        raise ctx.error(
            "a human-input node inside an iteration or loop cannot pause the run",
            field="type", hint="move the human-input node before or after the container")
    form, answer = ctx.form, ctx.answer
    titles = {a.id: a.title or a.id for a in config.user_actions}
    if form is not None and answer is not None:
        outputs = {**answer.values, "__action_id": answer.action,
                   "__action_value": titles.get(answer.action, answer.action),
                   "__rendered_content": filled(form, answer.values)}
        return NodeResult(outputs=outputs, inputs=dict(answer.values), handle=answer.action,
                          metadata={"answered_at": answer.answered_at})
    now = ctx.runtime.clock.now()
    if form is not None and form.expired(now):
        return NodeResult(outputs={"__action_id": "", "__action_value": "",
                                   "__rendered_content": form.content},
                          handle=TIMEOUT_HANDLE, metadata={"timed_out_at": now})
    if form is None:
        if not config.user_actions:
            raise ctx.error("the form has no user actions: a person could not answer it",
                            field="user_actions",
                            hint="add at least one action, e.g. {id: approve, title: Approve}")
        form = Form(
            run_id=ctx.run_id, node_id=ctx.node.id, title=ctx.node.title or ctx.node.id,
            token=new_token(), content=ctx.render(config.form_content),
            fields=tuple(_field(ctx, i) for i in config.inputs),
            actions=tuple(FormAction(a.id, a.title or a.id, a.button_style)
                          for a in config.user_actions),
            created_at=now,
            expires_at=now + config.timeout * _UNIT_SECONDS[config.timeout_unit])
    raise PauseRequested(form)


def _field(ctx: NodeContext, spec: FormInput) -> FormField:
    """A form field with its default and options read from the run."""
    default: Any = None
    source = spec.default or spec.placeholder
    if source is not None:
        default = (ctx.get(source.selector, None) if source.type == "variable"
                   else source.value)
        if default == "":
            default = None
    options = None
    if spec.type == "select" and spec.option_source is not None:
        found = spec.option_source
        values = (ctx.get(found.selector, None) if found.type == "variable" else found.value)
        options = [str(v) for v in values] if isinstance(values, (list, tuple)) else []
    return FormField(spec.output_variable_name, spec.type, default, options)
