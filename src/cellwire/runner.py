"""The one place runs start.

Every entry point (``wf.run``, ``%workflow run``, the editor, the CLI, batch and Dask rows, the
coming server) calls a :class:`Runner`. It builds the run's :class:`~cellwire.engine.Runtime`
once per set of options (store, model, cache) and reuses it, so providers, their connection
pools and the store stay warm across runs; it keeps a registry of runs by id whose handles
take commands (stop now; pause, resume and respond later) from any thread; and it keeps one
long-lived event loop on a thread of its own behind every blocking call, so connections opened
by one ``wf.run()`` serve the next.

The engine never builds services; this module is where they are assembled.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import os
import sqlite3
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Coroutine, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import cellwire.nodes  # noqa: F401 - declares the built-in node types
from cellwire.engine import CompiledWorkflow, Execution, RunResult, Runtime, compile_workflow
from cellwire.engine.commands import Command, Stop
from cellwire.engine.layers import Layer
from cellwire.engine.node_cache import NodeCache
from cellwire.engine.runtime import Sink
from cellwire.freshness import Ledger, Staleness
from cellwire.model import Workflow
from cellwire.services.files import FolderPolicy
from cellwire.services.files.objects import system_files
from cellwire.services.http import SharedHTTP
from cellwire.services.http.guard import NetworkPolicy
from cellwire.services.knowledge.service import Knowledge
from cellwire.services.llm import LLMRouter, default_router
from cellwire.services.llm.cache import open_cache
from cellwire.services.llm.config import config_stamp, load_config
from cellwire.services.sandbox import shared_sandbox
from cellwire.services.secrets import grant_values
from cellwire.store import RunStore, default_store, open_store

if TYPE_CHECKING:
    from cellwire.engine.state import RunStatus

T = TypeVar("T")

#: ``True``: the default store in the home folder; ``False``/``None``: none; a path or a store.
StoreOption = bool | str | os.PathLike[str] | RunStore | None

class _Default:
    """``store=`` not given: the runner's own default applies (``None`` means no store)."""

    def __repr__(self) -> str:
        return "DEFAULT"

    def __reduce__(self) -> str:
        # Unpickled (on a Dask worker) as this module's DEFAULT, so `is DEFAULT` holds there.
        return "DEFAULT"


#: The value of an option the caller did not give.
DEFAULT: Any = _Default()

#: Keywords of a run that are options of the run, not inputs.
RUN_OPTIONS = ("concurrency", "max_steps", "max_time", "run_id", "conversation", "start_at",
               "previous", "single", "secrets", "stale", "durability")

#: Seconds a blocking call waits for an interrupted run to end (and be stored) before it
#: gives up waiting.
STOP_GRACE = 10.0

#: Finished runs the registry remembers (running ones are always kept).
KEEP_FINISHED = 200


def resolve_store(store: StoreOption = True) -> RunStore | None:
    """The run store a ``store=`` option names."""
    if store is True:
        try:
            return default_store()
        except (OSError, sqlite3.Error) as exc:
            # The default must never stop a run (a read-only folder, say); an explicit store may.
            warnings.warn(f"cellwire runs are not stored: {exc} (set CELLWIRE_HOME to a "
                          "writable folder, or pass store=False)", RuntimeWarning, stacklevel=3)
            return None
    if store is False or store is None:
        return None
    if isinstance(store, RunStore):
        return store
    return open_store(store)


# -- the background loop --------------------------------------------------------------------


#: ``CELLWIRE_EVENT_LOOP=asyncio``: the background loop is asyncio's own, not uvloop's.
EVENT_LOOP_ENV = "CELLWIRE_EVENT_LOOP"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A loop for the runner's blocking calls: uvloop's where it is installed (a dependency
    on Linux and macOS), else, or with ``CELLWIRE_EVENT_LOOP=asyncio``, asyncio's.

    uvloop opens connections and turns the loop for less CPU: 200 llm calls at once from a
    cold ``cellwire run`` finish about 10 ms sooner (see docs/performance.md)."""
    choice = os.environ.get(EVENT_LOOP_ENV, "").strip().lower()
    if choice not in ("", "uvloop", "asyncio"):
        raise ValueError(f"{EVENT_LOOP_ENV}={choice!r}: use 'uvloop' or 'asyncio'")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class BackgroundLoop:
    """One event loop on a daemon thread, started on first use and closed at exit."""

    def __init__(self, name: str = "cellwire-runner"):
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def on_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the loop and wait for it; Ctrl-C cancels it."""
        if self.on_thread():
            # Called from code running on this very loop (a node calling wf.run()): waiting
            # here would deadlock, so that call gets a loop of its own.
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cellwire") as pool:
                return pool.submit(asyncio.run, work).result()
        future = self.submit(work)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()


# -- handles --------------------------------------------------------------------------------


class RunHandle:
    """A started run: its ``status``, ``stop()``, ``await handle`` or ``handle.wait()``.

    Commands may come from any thread: they are carried out on the run's own event loop.
    """

    def __init__(self, execution: Execution, workflow: str, loop: asyncio.AbstractEventLoop):
        self.execution = execution
        self.run_id = execution.run_id
        self.workflow = workflow
        self._loop = loop
        self._future: concurrent.futures.Future[RunResult] = concurrent.futures.Future()
        self.task: asyncio.Task[RunResult] | None = None

    @property
    def status(self) -> RunStatus:
        return self.execution.status

    @property
    def done(self) -> bool:
        return self._future.done()

    @property
    def result(self) -> RunResult | None:
        """The finished run, or None while it runs."""
        if not self._future.done() or self._future.cancelled():
            return None
        return self._future.result() if self._future.exception() is None else None

    def send(self, command: Command) -> None:
        """Deliver ``command`` to the run, from any thread."""
        if self.done:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self.execution.command(command)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.execution.command, command)

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel the run; it ends ``stopped``."""
        self.send(Stop(reason))

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until the run ends (not from the run's own event loop)."""
        return self._future.result(timeout)

    def __await__(self) -> Generator[Any, None, RunResult]:
        return asyncio.wrap_future(self._future).__await__()

    def _settle(self, task: asyncio.Task[RunResult]) -> None:
        if task.cancelled():
            self._future.cancel()
        elif (error := task.exception()) is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(task.result())

    def __repr__(self) -> str:
        return (f"RunHandle(run_id={self.run_id!r}, workflow={self.workflow!r}, "
                f"status={str(self.status)!r})")


# -- the runner -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RunOptions:
    """What a runner's runs get unless a call says otherwise."""

    store: StoreOption = True
    model: str | None = None
    cache: bool = False
    concurrency: int | None = None
    #: The folder whose files runs may read (images named by inputs); None: no local files.
    files: str | os.PathLike[str] | None = "."
    #: Secrets every run is granted (grant specs such as ``"OPENAI_API_KEY"`` or
    #: ``"KEY=env:MY_KEY"``, or values by name): :func:`cellwire.services.secrets.grant_values`.
    secrets: Mapping[str, str] | Sequence[str] | None = None
    #: Answer pure nodes (code, template-transform) from the runner's in-memory node cache
    #: when their fingerprint and the values they read are those of an earlier execution.
    node_cache: bool = False


class Runner:
    """Starts runs with a runtime built from its options, and keeps them by run id.

    ``runtime=`` gives a runtime of your own (tests, embedding); the runner then adds only the
    store layer (when ``store`` names one and the runtime has none) and per-run layers.
    """

    def __init__(self, *, runtime: Runtime | None = None, **options: Any):
        self.options = RunOptions(**options)
        self._base = runtime
        self._lock = threading.RLock()
        self._runtimes: dict[tuple[Any, ...], Runtime] = {}
        #: (config stamp, config fingerprint, router)
        self._router: tuple[Any, Any, LLMRouter] | None = None
        self._http = SharedHTTP()
        self._runs: OrderedDict[str, RunHandle] = OrderedDict()
        self._watchers: dict[int, tuple[weakref.ref[Workflow], list[Layer | Sink]]] = {}
        #: The last run of each workflow object and its fingerprints: what is stale.
        self.ledger = Ledger()
        #: Results of pure nodes, for runs with the ``node_cache`` option.
        self.node_cache = NodeCache()
        #: Layers every run of this runner feeds (OpenTelemetry, say).
        self.layers: list[Layer | Sink] = []

    def configure(self, **options: Any) -> None:
        """Change the defaults of later runs (``store``, ``model``, ``cache``, ...)."""
        with self._lock:
            self.options = dataclasses.replace(self.options, **options)

    # -- runtimes -------------------------------------------------------------------------

    def runtime(self, *, store: StoreOption = DEFAULT, model: str | None = None,
                cache: bool | None = None, base: Runtime | None = None) -> Runtime:
        """The runtime of a run with these options (the runner's defaults where None).

        Built once per set of options and reused. ``base`` is a caller's own runtime: it
        keeps its services and gets the store, model and cache of the options added.
        """
        opts = self.options
        found = resolve_store(opts.store if store is DEFAULT else store)
        model = model if model is not None else opts.model
        cache = opts.cache if cache is None else cache
        if base is None:
            base = self._base
        if base is not None and base is not self._base:
            router = self._current_router() if base.llm is None else base.llm
            return self._assemble(base, found, router, model, cache, own=True)
        router = self._current_router() if base is None or base.llm is None else base.llm
        files = os.path.abspath(opts.files) if opts.files is not None else None
        key = (id(found), id(router), model, cache, files, opts.node_cache)
        with self._lock:
            runtime = self._runtimes.get(key)
            if runtime is None:
                runtime = self._runtimes[key] = self._assemble(
                    base or Runtime(), found, router, model, cache, own=base is not None)
            return runtime

    def _assemble(self, base: Runtime, store: RunStore | None, router: Any, model: str | None,
                  cache: bool, *, own: bool = False) -> Runtime:
        # A caller's own runtime (``own``) keeps its file policy, ``None`` (no local files)
        # included: granting the working folder is the runner's default, never a surprise.
        layers = list(base.layers)
        if store is not None and not any(getattr(s, "store", None) is not None
                                         for s in layers):
            layers.append(store.sink)
        files = self.options.files
        policy = base.files if own or files is None else FolderPolicy(os.path.abspath(files))
        return dataclasses.replace(
            base, layers=layers, llm=router,
            http=self._http if base.http is None else base.http,
            # The store keeps the conversations (chat memory, conversation variables) and the
            # LLM response cache.
            memory=store if base.memory is None else base.memory,
            conversations=store if base.conversations is None else base.conversations,
            cache=(base.cache if base.cache is not None or store is None
                   else open_cache(store.path)),
            cache_all=cache or base.cache_all,
            files=policy,
            # The project's knowledge bases (<home>/knowledge), embedding through the router.
            knowledge=(Knowledge(router=router) if base.knowledge is None else base.knowledge),
            model_override=model or base.model_override,
            node_cache=(self.node_cache if self.options.node_cache and base.node_cache is None
                        else base.node_cache),
            # Runs on a store commit their checkpoints to it (durability decides when).
            checkpointer=(store.checkpoints if base.checkpointer is None and store is not None
                          else base.checkpointer),
        )

    def _current_router(self) -> LLMRouter:
        # The providers' configuration may change between runs (a key set in the notebook, a
        # providers.yaml edited): the router is rebuilt only when it did, and the files and
        # the environment are read again only when their stamp says they changed.
        env = os.environ
        stamp = config_stamp(env)
        with self._lock:
            if self._router is not None and self._router[0] == stamp:
                return self._router[2]
        config = load_config(env)
        keys = hashlib.sha256("\0".join(str(spec.key(env)) for spec in
                                        config.providers.values()).encode()).hexdigest()
        fingerprint = (repr(config), keys)
        with self._lock:
            if self._router is None or self._router[1] != fingerprint:
                self._router = (stamp, fingerprint, default_router(env))
                self._runtimes.clear()
            else:
                self._router = (stamp, fingerprint, self._router[2])
            return self._router[2]

    # -- watchers ---------------------------------------------------------------------------

    def watch(self, workflow: Workflow, layer: Layer | Sink) -> None:
        """Feed ``layer`` the events of every later run of ``workflow`` this runner starts."""
        with self._lock:
            entry = self._watchers.get(id(workflow))
            if entry is None or entry[0]() is not workflow:
                entry = self._watchers[id(workflow)] = (weakref.ref(workflow), [])
            if layer not in entry[1]:
                entry[1].append(layer)

    def unwatch(self, workflow: Workflow, layer: Layer | Sink) -> None:
        with self._lock:
            entry = self._watchers.get(id(workflow))
            if entry is not None and layer in entry[1]:
                entry[1].remove(layer)

    def _watching(self, workflow: Workflow) -> list[Layer | Sink]:
        with self._lock:
            entry = self._watchers.get(id(workflow))
            return list(entry[1]) if entry is not None and entry[0]() is workflow else []

    # -- starting runs ----------------------------------------------------------------------

    def prepare(self, workflow: Workflow | CompiledWorkflow, inputs: Mapping[str, Any] | None,
                *, runtime: Runtime | None = None, layers: Iterable[Layer | Sink] = (),
                store: StoreOption = DEFAULT, model: str | None = None,
                cache: bool | None = None, secrets: Any = None, tools: Any = None,
                tool_map: Mapping[str, str] | None = None, **options: Any) -> Execution:
        """The execution of one run, not started: options checked, runtime assembled.

        ``secrets`` grants the run secret values (on top of the runner's own ``secrets``):
        grant specs or values by name, as :func:`cellwire.services.secrets.grant_values`
        takes them. A workflow never takes a secret it was not granted.

        ``tools`` adds tools (functions, Tool objects) to the registered ones and the
        workflow's own (``wf.tools``); ``tool_map`` renames Dify tools to registered ones.
        """
        compiled = workflow if isinstance(workflow, CompiledWorkflow) else \
            compile_workflow(workflow)
        granted = self._grants(secrets)
        if granted is not None:
            options["secrets"] = granted
        runtime = self.runtime(store=store, model=model, cache=cache, base=runtime)
        if tools or tool_map or compiled.workflow.tools:
            # Here, not at the top: the tool service brings httpx (and, through it, rich and
            # pygments), about 120 ms of imports that a run without tools does not need.
            from cellwire.services.tools import run_registry

            runtime = dataclasses.replace(runtime, tools=run_registry(
                runtime.tools, compiled.workflow.tools, tools, renames=tool_map))
        if not compiled.workflow.trusted:
            runtime = untrusted(runtime)
        extra = [*self.layers, *self._watching(compiled.workflow), *layers]
        extra = [layer for layer in dict.fromkeys(extra) if layer not in runtime.layers]
        if extra:
            runtime = dataclasses.replace(runtime, layers=[*runtime.layers, *extra])
        if options.get("concurrency") is None:
            options.pop("concurrency", None)
            if self.options.concurrency is not None:
                options["concurrency"] = self.options.concurrency
        inputs = dict(inputs or {})
        if inputs.get("sys.files"):
            inputs["sys.files"] = system_files(inputs["sys.files"], runtime.files)
        return Execution(compiled, inputs, runtime, **options)

    def _grants(self, secrets: Any) -> dict[str, str] | None:
        defaults = grant_values(self.options.secrets)
        given = grant_values(secrets)
        if defaults is None:
            return given
        return {**defaults, **(given or {})}

    def start(self, workflow: Workflow | CompiledWorkflow,
              inputs: Mapping[str, Any] | None = None, **options: Any) -> RunHandle:
        """Start a run as a task on the running event loop; returns its handle at once."""
        return self.launch(self.prepare(workflow, inputs, **options))

    def launch(self, execution: Execution) -> RunHandle:
        """Start a prepared execution on the running event loop and register it."""
        loop = asyncio.get_running_loop()
        handle = RunHandle(execution, execution.compiled.workflow.name, loop)
        self._register(handle)
        handle.task = loop.create_task(execution.run())
        # Recorded before the handle settles: once a caller has the result, stale() knows it.
        handle.task.add_done_callback(lambda task: self._record(execution, task))
        handle.task.add_done_callback(handle._settle)
        return handle

    def _record(self, execution: Execution, task: asyncio.Task[RunResult]) -> None:
        if not task.cancelled() and task.exception() is None:
            # The fingerprints of what the run started with: its compiled workflow never
            # changes, so they are taken after the run, off its way to the first node.
            self.ledger.record(execution, task.result(), _fingerprints(execution))

    # -- stale tracking ---------------------------------------------------------------------

    def stale(self, workflow: Workflow, inputs: Mapping[str, Any] | None = None, *,
              model: str | None = None) -> Staleness:
        """What changed in ``workflow`` since its last run by this runner, for a run with
        ``inputs`` (missing ones: the last run's) and ``model`` (the runner's default when
        None): :class:`~cellwire.freshness.Staleness`."""
        compiled = compile_workflow(workflow)
        override = self.runtime(model=model).model_override
        return self.ledger.stale(compiled, compiled.fingerprints(override), inputs)

    def _stale_run(self, workflow: Workflow | CompiledWorkflow,
                   inputs: Mapping[str, Any] | None,
                   options: dict[str, Any]) -> tuple[dict[str, Any], RunResult | None]:
        """For ``stale=True``: the inputs and options that execute only the stale nodes, or
        the last run when nothing is stale."""
        wf = workflow.workflow if isinstance(workflow, CompiledWorkflow) else workflow
        found = self.stale(wf, inputs, model=options.get("model"))
        if not found.nodes:
            return found.inputs, found.previous
        options.update(found.options())
        return found.inputs, None

    def submit(self, workflow: Workflow | CompiledWorkflow,
               inputs: Mapping[str, Any] | None = None, **options: Any) -> RunHandle:
        """Start a run on the runner's background loop from any thread; returns at once."""
        return self.launch_background(self.prepare(workflow, inputs, **options))

    def launch_background(self, execution: Execution) -> RunHandle:
        """Start a prepared execution on the background loop, from any thread."""

        async def launch() -> RunHandle:
            return self.launch(execution)

        return background.call(launch())

    async def arun(self, workflow: Workflow | CompiledWorkflow,
                   inputs: Mapping[str, Any] | None = None, *, stale: bool = False,
                   **options: Any) -> RunResult:
        """Run to the end on the running event loop. ``stale=True`` executes only the nodes
        that changed since the workflow's last run (and what follows them), reusing that
        run's results for the rest; when nothing changed it returns that run."""
        if stale:
            inputs, last = self._stale_run(workflow, inputs, options)
            if last is not None:
                return last
        return _warn_unstored(await self.start(workflow, inputs, **options))

    def run(self, workflow: Workflow | CompiledWorkflow,
            inputs: Mapping[str, Any] | None = None, *, stale: bool = False,
            **options: Any) -> RunResult:
        """Run to the end from synchronous code, on the runner's long-lived loop. Ctrl-C stops
        the run (it ends ``stopped``, and is stored as such) and is raised again.
        ``stale`` as in :meth:`arun`."""
        if stale:
            inputs, last = self._stale_run(workflow, inputs, options)
            if last is not None:
                return last
        handle = self.submit(workflow, inputs, **options)
        try:
            return _warn_unstored(handle.wait())
        except KeyboardInterrupt:
            handle.stop("interrupted (Ctrl-C)")
            with contextlib.suppress(Exception, KeyboardInterrupt):
                handle.wait(timeout=STOP_GRACE)
            raise

    # -- the registry -----------------------------------------------------------------------

    def _register(self, handle: RunHandle) -> None:
        with self._lock:
            self._runs[handle.run_id] = handle
            excess = len(self._runs) - KEEP_FINISHED
            if excess <= 0:
                return
            # Oldest first, and only as far as needed: a batch registers a run per row, and
            # a scan of every kept run per row was a good share of a row's time.
            finished: list[str] = []
            for key, kept in self._runs.items():
                if kept.done:
                    finished.append(key)
                    if len(finished) == excess:
                        break
            for key in finished:
                del self._runs[key]

    def get(self, run_id: str) -> RunHandle:
        """The handle of a run this runner started; KeyError names the known ones."""
        with self._lock:
            try:
                return self._runs[run_id]
            except KeyError:
                raise KeyError(f"no run {run_id!r} started in this process (runs in the store "
                               "are read with cellwire.runs())") from None

    def runs(self) -> list[RunHandle]:
        """The runs this runner knows, oldest first."""
        with self._lock:
            return list(self._runs.values())

    def send(self, run_id: str, command: Command) -> None:
        """Deliver ``command`` to the run ``run_id``."""
        self.get(run_id).send(command)

    def stop(self, run_id: str, reason: str = "stopped by the user") -> None:
        self.send(run_id, Stop(reason))


def _fingerprints(execution: Execution) -> dict[str, str]:
    """The fingerprints a run starts with (none when its configs cannot be hashed: then
    every node is stale after it)."""
    try:
        return execution.compiled.fingerprints(execution.runtime.model_override)
    except (TypeError, ValueError, RecursionError):
        return {}


def _warn_unstored(result: RunResult) -> RunResult:
    if result.stored is False:
        # The result says so too; a warning is what a notebook user sees without asking.
        warnings.warn(f"cellwire could not store run {result.run_id}: {result.store_error}",
                      RuntimeWarning, stacklevel=3)
    return result


#: The loop behind every blocking call of this process.
background = BackgroundLoop()
atexit.register(background.close)

_default: Runner | None = None
_default_lock = threading.Lock()


def default_runner() -> Runner:
    """The process's runner: ``wf.run``, the magics, the editor and the CLI share it."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Runner()
        return _default


def blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end from synchronous code, on the long-lived background loop."""
    return background.call(work)


def untrusted(runtime: Runtime) -> Runtime:
    """``runtime`` for a workflow the user has not trusted (read from a file, or received):
    its code nodes run in the sandbox (refused, saying how to fix it, where bubblewrap cannot
    run), and its HTTP nodes may reach public addresses only (``$CELLWIRE_HTTP_ALLOW`` lets
    some through). What the runtime sets itself (a caller's own executor or policy) stays."""
    if runtime.code is not None and runtime.network is not None:
        return runtime
    return dataclasses.replace(
        runtime,
        code=runtime.code if runtime.code is not None else shared_sandbox(),
        network=runtime.network if runtime.network is not None else NetworkPolicy.untrusted(),
    )


def split_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the run options (and ``store``, ``model``, ``cache``, ``runtime``, ``layers``) out
    of ``kwargs``; what stays are inputs."""
    names = (*RUN_OPTIONS, "store", "model", "cache", "runtime", "layers", "tools", "tool_map")
    return {name: kwargs.pop(name) for name in names if name in kwargs}


async def arun(workflow: Workflow, inputs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> RunResult:
    """Run ``workflow`` on the default runner; run options and inputs by keyword
    (:func:`cellwire.api.arun` documents them)."""
    options = split_options(kwargs)
    return await default_runner().arun(workflow, {**(inputs or {}), **kwargs}, **options)


def run(workflow: Workflow, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """Blocking :func:`arun`, on the long-lived background loop (also in a notebook)."""
    options = split_options(kwargs)
    return default_runner().run(workflow, {**(inputs or {}), **kwargs}, **options)


__all__ = [
    "DEFAULT", "RUN_OPTIONS", "BackgroundLoop", "RunHandle", "RunOptions", "Runner", "StoreOption",
    "arun", "background", "blocking", "default_runner", "resolve_store", "run", "split_options",
]
