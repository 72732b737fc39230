"""knowledge-retrieval: search the run's knowledge bases for the query, Dify's fields.

``dataset_ids`` name cellwire knowledge bases by id, name or a bound Dify dataset id
(``cellwire kb bind``). ``multiple`` retrieval searches every base and keeps the ``top_k``
best over all; ``single`` retrieval lets the model ``single_retrieval_config.model`` pick the
one base to search (:mod:`.dataset_router`). ``reranking_mode`` ``weighted_score`` uses Dify's weights;
``reranking_model`` (Dify's default mode, unless ``reranking_enable`` is false) re-scores the
hits of all bases with the rerank model ``reranking_model{provider, model}``, resolved like any
model of the run (a provider's ``POST /rerank``). Manual metadata filtering applies Dify's
conditions (values may hold ``{{#node.var#}}`` references); automatic filtering lets the model
``metadata_model_config`` write them from the query (:mod:`.metadata_filter`). The output
``result`` is Dify's list of chunks (``content``, ``title``, ``metadata``), which an llm
node's ``context`` joins into its ``{{#context#}}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type
from cellwire.services.llm import ProviderError

from .dataset_router import Choice, choose_base
from .llm import ModelConfig
from .llm.call import Call, router_of
from .llm.config import node_error
from .metadata_filter import AutomaticFilter, automatic_filter


class VectorSetting(NodeConfig):
    vector_weight: float = 0.7
    embedding_provider_name: str | None = None
    embedding_model_name: str | None = None


class KeywordSetting(NodeConfig):
    keyword_weight: float = 0.3


class Weights(NodeConfig):
    vector_setting: VectorSetting = Field(default_factory=VectorSetting)
    keyword_setting: KeywordSetting = Field(default_factory=KeywordSetting)


class MultipleRetrievalConfig(NodeConfig):
    top_k: int | None = Field(None, ge=1)
    score_threshold: float | None = None
    score_threshold_enabled: bool | None = None
    reranking_mode: str | None = None
    reranking_enable: bool | None = None
    reranking_model: dict[str, Any] | None = None
    weights: Weights | None = None


class MetadataCondition(NodeConfig):
    name: str
    comparison_operator: str
    value: Any = None


class MetadataConditions(NodeConfig):
    logical_operator: Literal["and", "or"] = "and"
    conditions: list[MetadataCondition] = Field(default_factory=list)


class KnowledgeRetrievalConfig(NodeConfig):
    query_variable_selector: list[str] | None = None
    dataset_ids: list[str] = Field(default_factory=list)
    retrieval_mode: Literal["single", "multiple"] = "multiple"
    multiple_retrieval_config: MultipleRetrievalConfig | None = None
    single_retrieval_config: dict[str, Any] | None = None
    metadata_filtering_mode: Literal["disabled", "automatic", "manual"] = "disabled"
    metadata_filtering_conditions: MetadataConditions | None = None
    metadata_model_config: ModelConfig | None = None
    # knowledge-retrieval-v2 names its bases and count differently.
    control_space_ids: list[str] = Field(default_factory=list)
    top_n: int | None = Field(None, ge=1)


@node_type("knowledge-retrieval", config=KnowledgeRetrievalConfig, outputs=("result",),
           aliases=["knowledge-retrieval-v2"])
async def run(ctx: NodeContext) -> NodeResult:
    """Search the knowledge bases ``dataset_ids`` for the query; output ``result``."""
    config: KnowledgeRetrievalConfig = ctx.config
    knowledge = ctx.runtime.knowledge
    datasets = config.dataset_ids or config.control_space_ids
    if knowledge is None:
        raise NodeError("this run has no knowledge service", field="dataset_ids",
                        hint="run through cellwire's runner (it opens the project's knowledge "
                             "bases), or pass runtime=Runtime(knowledge=Knowledge(...))")
    if not datasets:
        raise NodeError("the node names no knowledge base", field="dataset_ids",
                        hint="list knowledge base names or ids in dataset_ids "
                             "(cellwire kb list shows them)")
    if not config.query_variable_selector:
        raise NodeError("no query variable is selected", field="query_variable_selector",
                        hint="select the query, e.g. ['sys', 'query'] or ['start', 'query']")
    query = ctx.get(config.query_variable_selector, None, field="query_variable_selector")
    query = "" if query is None else str(query)
    inputs = {"query": query}
    if not query.strip():
        return NodeResult(inputs=inputs, outputs={"result": []})
    multiple = config.multiple_retrieval_config or MultipleRetrievalConfig()
    single = config.retrieval_mode == "single"
    options: dict[str, Any] = {}
    notes: list[str] = []
    calls: list[Call] = []
    # Single retrieval searches the chosen base as it is; Dify ignores the node's multiple
    # retrieval settings (threshold, reranking) there.
    threshold = multiple.score_threshold if not single and \
        multiple.score_threshold_enabled is not False else None
    if single:
        pass
    elif multiple.reranking_mode == "weighted_score" and multiple.weights is not None:
        options.update(fusion="weighted",
                       vector_weight=multiple.weights.vector_setting.vector_weight,
                       keyword_weight=multiple.weights.keyword_setting.keyword_weight)
    elif multiple.reranking_mode in (None, "reranking_model") and \
            multiple.reranking_enable is not False and multiple.reranking_model:
        options["rerank"] = _reranker(ctx, multiple.reranking_model)
    if config.metadata_filtering_mode == "manual" and config.metadata_filtering_conditions:
        options["filters"] = _conditions(ctx, config.metadata_filtering_conditions)
    top_k = config.top_n or multiple.top_k or 4
    automatic: AutomaticFilter | None = None
    try:
        if config.metadata_filtering_mode == "automatic":
            given = config.metadata_filtering_conditions
            automatic = await automatic_filter(
                ctx, config.metadata_model_config, knowledge.metadata_fields(datasets), query,
                given.logical_operator if given is not None else "or")
            notes.extend(automatic.notes)
            calls += [automatic.call] if automatic.call is not None else []
            if automatic.conditions is not None:
                options["filters"] = automatic.conditions
        chosen: Choice | None = None
        if single:
            chosen = await choose_base(ctx, config.single_retrieval_config,
                                       knowledge.describe_bases(datasets), query)
            notes.extend(chosen.notes)
            calls += [chosen.call] if chosen.call is not None else []
        if chosen is not None and chosen.dataset is None:
            result = []
        else:
            result = await knowledge.retrieve(
                [chosen.dataset] if chosen is not None and chosen.dataset else datasets,
                query, top_k=top_k, score_threshold=threshold, **options)
    except NodeError:
        raise
    except ProviderError as exc:
        # A rerank model's or embedding model's server failed: retryable when it says so.
        error = node_error(exc, f"{exc.provider}/{exc.model}")
        rerank = options.get("rerank")
        error.field = "multiple_retrieval_config.reranking_model" if rerank is not None and \
            exc.model == rerank.model else "dataset_ids"
        raise error from None
    except LookupError as exc:
        raise NodeError(str(exc.args[0] if exc.args else exc), field="dataset_ids",
                        hint="create the knowledge base, or bind the dataset id to one "
                             "(cellwire kb bind NAME DATASET_ID)") from None
    except (ValueError, RuntimeError) as exc:
        raise NodeError(f"retrieval failed: {exc}", field="dataset_ids",
                        hint="check the knowledge base's embedding model and the "
                             "node's retrieval settings") from None
    process: dict[str, Any] = {"retrieved": len(result), "top_k": top_k,
                               "score_threshold": threshold}
    if "rerank" in options:
        process["rerank_model"] = options["rerank"].name
    if automatic is not None:
        process["metadata_filter"] = {"conditions": automatic.conditions,
                                      "reply": automatic.reply}
    if chosen is not None:
        process["chosen_dataset"] = chosen.dataset
    if notes:
        process["notes"] = notes
    if not calls:
        return NodeResult(inputs=inputs, outputs={"result": result}, process_data=process)
    usage = calls[0].node_usage()
    for call in calls[1:]:
        usage = usage + call.node_usage()
    process["usage"] = [call.usage_dict for call in calls]
    return NodeResult(inputs=inputs, outputs={"result": result}, process_data=process,
                      usage=usage, metadata=calls[-1].metadata())


def _reranker(ctx: NodeContext, given: dict[str, Any]) -> Any:
    """The rerank model ``reranking_model{provider, model}`` names, routed like every model
    of the run (its provider's ``POST /rerank``)."""
    from cellwire.services.knowledge.rerank import ModelReranker, RerankUnavailable

    name = str(given.get("model") or given.get("reranking_model_name") or "")
    provider = str(given.get("provider") or given.get("reranking_provider_name") or "")
    field = "multiple_retrieval_config.reranking_model"
    if not name:
        raise NodeError("the rerank model names no model", field=field,
                        hint="set reranking_model {provider, model}, or reranking_enable: "
                             "false")
    override = ctx.runtime.model_override
    try:
        # As every model of the run: mapped, or redirected by the run's model override; but
        # never the default model, which is a chat model.
        route = router_of(ctx).resolve_config(provider, name, override=override,
                                              fallback=False)
    except ProviderError as exc:
        error = node_error(exc, override or f"{provider}/{name}".strip("/"))
        error.field = field
        raise error from None
    try:
        return ModelReranker(route.provider, route.model)
    except RerankUnavailable as exc:
        raise NodeError(str(exc), field=field,
                        hint="or set reranking_mode: weighted_score, or reranking_enable: "
                             "false to keep the retrievers' own scores") from None


def _conditions(ctx: NodeContext, given: MetadataConditions) -> dict[str, Any]:
    conditions = []
    for condition in given.conditions:
        value = condition.value
        if isinstance(value, str):
            value = ctx.render(value)
        conditions.append({"name": condition.name,
                           "comparison_operator": condition.comparison_operator,
                           "value": value})
    return {"logical_operator": given.logical_operator, "conditions": conditions}
