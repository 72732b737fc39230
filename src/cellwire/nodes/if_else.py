"""if-else: the first case whose conditions hold picks the branch; none holding picks 'false'."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from cellwire.engine import NodeContext, NodeResult
from cellwire.model import NodeConfig, node_type

from .conditions import Condition, LogicalOperator, evaluate

#: The else branch's handle, and the id a legacy (single-case) if-else gives its case.
ELSE = "false"
LEGACY_CASE = "true"


class Case(NodeConfig):
    case_id: str
    logical_operator: LogicalOperator = "and"
    conditions: list[Condition] = Field(default_factory=list)


class IfElseConfig(NodeConfig):
    cases: list[Case] = Field(default_factory=list)
    #: Dify's legacy form: one case, given by top-level ``conditions`` + ``logical_operator``.
    conditions: list[Condition] | None = None
    logical_operator: LogicalOperator = "and"

    @model_validator(mode="after")
    def _check_case_ids(self) -> IfElseConfig:
        ids = [case.case_id for case in self.cases]
        if ELSE in ids:
            raise ValueError(f"case_id {ELSE!r} is the else branch's handle; rename that case")
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"case_id {duplicates} given more than once; give each case its own id")
        return self

    @property
    def legacy(self) -> bool:
        return not self.cases and self.conditions is not None

    def all_cases(self) -> list[Case]:
        """The cases in order; the legacy form becomes one case with id 'true'."""
        if self.legacy:
            return [Case(case_id=LEGACY_CASE, logical_operator=self.logical_operator,
                         conditions=self.conditions or [])]
        return self.cases


def _handles(config: IfElseConfig) -> list[str]:
    return [*(case.case_id for case in config.all_cases()), ELSE]


@node_type("if-else", config=IfElseConfig, outputs=["result", "selected_case_id"],
           handles=_handles)
async def run(ctx: NodeContext) -> NodeResult:
    """Route the run down the branch of the first case whose conditions hold."""
    config: IfElseConfig = ctx.config

    def get(selector: Any) -> Any:
        return ctx.pool.get(selector, None)

    checked: list[dict[str, Any]] = []
    selected: str | None = None
    for index, case in enumerate(config.all_cases()):
        field = "conditions" if config.legacy else f"cases[{index}].conditions"
        holds = evaluate(case.conditions, case.logical_operator, get, field=field)
        checked.append({"case_id": case.case_id, "result": holds})
        if holds:
            selected = case.case_id
            break
    inputs = {
        "conditions": [
            {"variable_selector": c.variable_selector, "comparison_operator":
             c.comparison_operator, "actual_value": get(c.variable_selector) if c.variable_selector else None,
             "expected_value": c.value}
            for case in config.all_cases() for c in case.conditions
        ]
    }
    # Dify: the legacy form reports 'true'/'false'; the cases form reports None for the else.
    selected_case_id = selected if not config.legacy else (selected or ELSE)
    return NodeResult(
        inputs=inputs,
        outputs={"result": selected is not None, "selected_case_id": selected_case_id},
        process_data={"condition_results": checked},
        handle=selected or ELSE,
    )
