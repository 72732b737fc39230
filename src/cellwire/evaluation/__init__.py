"""Evaluation over datasets: run one or more workflows over the same rows, score every
output (exact, contains, regex, JSON field, numeric tolerance, string or embedding
similarity, an LLM judge, any Python function), summarize with bootstrap confidence
intervals, chart, find the rows where they disagree, and keep the result in the store."""

from .judge import judge
from .result import Evaluation, bootstrap_ci, evaluations
from .run import Variant, aevaluate, evaluate
from .scorers import (
    Score,
    Scorer,
    contains,
    embedding,
    exact,
    function,
    json_field,
    numeric,
    regex,
    scorer_of,
    similarity,
)

__all__ = [
    "Evaluation", "Score", "Scorer", "Variant", "aevaluate", "bootstrap_ci", "contains",
    "embedding", "evaluate", "evaluations", "exact", "function", "json_field", "judge",
    "numeric", "regex", "scorer_of", "similarity",
]
