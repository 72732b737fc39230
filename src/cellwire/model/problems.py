"""Problems found in a workflow: each names the node, the field and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workflow, with the way to fix it."""

    node_id: str | None
    field: str | None
    message: str
    hint: str = ""
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = []
        if self.node_id is not None:
            where.append(f"node '{self.node_id}'")
        if self.field:
            where.append(f"field '{self.field}'")
        text = f"{' '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f" (fix: {self.hint})"
        return f"{self.level}: {text}" if self.level == "warning" else text

    def as_dict(self) -> dict[str, str | None]:
        return {
            "node_id": self.node_id,
            "field": self.field,
            "message": self.message,
            "hint": self.hint,
            "level": self.level,
        }


class WorkflowError(ValueError):
    """A workflow that cannot be loaded or run as it is; ``problems`` says why."""

    def __init__(self, problems: Sequence[Problem], summary: str | None = None):
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        head = summary or f"{len(lines)} problem(s) in the workflow"
        super().__init__(head + ("\n" + "\n".join(lines) if lines else ""))
