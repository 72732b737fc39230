"""Built-in node types: importing this package declares them to the registry, which imports a
type's module on the first lookup of its name (a run imports the node modules it uses, each
with its own dependencies: httpx, the LLM stack, the knowledge base)."""

from cellwire.model.registry import registry

#: Each built-in module and the type names and aliases it registers (a unit test checks this
#: against what the modules register).
BUILTIN: dict[str, tuple[str, ...]] = {
    "start": ("start",),
    "end": ("end",),
    "iteration": ("iteration", "iteration-start"),
    "loop": ("loop", "loop-start", "loop-end"),
    "if_else": ("if-else",),
    "variable_aggregator": ("variable-aggregator", "variable-assigner"),
    "assigner": ("assigner",),
    "list_operator": ("list-operator",),
    "template_transform": ("template-transform",),
    "code": ("code",),
    "answer": ("answer",),
    "http_request": ("http-request",),
    "llm": ("llm",),
    "question_classifier": ("question-classifier",),
    "parameter_extractor": ("parameter-extractor",),
    "human_input": ("human-input",),
    "tool": ("tool",),
    "agent": ("agent",),
    "knowledge_retrieval": ("knowledge-retrieval", "knowledge-retrieval-v2"),
    "document_extractor": ("document-extractor",),
    "triggers": ("trigger-webhook", "trigger-schedule"),
    # Placeholders (fallbacks) for Dify types not built here; listed after the real types.
    "unsupported": ("trigger-plugin", "datasource", "knowledge-index", "command",
                    "question-classifier", "parameter-extractor"),
}

for _module, _names in BUILTIN.items():
    registry.declare(f"{__name__}.{_module}", _names)
