"""Built-in node types; importing this package registers them."""

from importlib import import_module

BUILTIN = [
    "start", "end", "iteration", "loop", "if_else", "variable_aggregator", "assigner",
    "list_operator", "template_transform", "code", "answer", "http_request", "llm",
    "question_classifier", "parameter_extractor", "human_input", "tool", "agent",
    "knowledge_retrieval", "document_extractor", "triggers", "unsupported",
]

for _name in BUILTIN:
    import_module(f"{__name__}.{_name}")
