"""The run store's tables and their migrations, versioned with ``PRAGMA user_version``.

Migration ``i`` moves a database from version ``i`` to ``i + 1``; a new table or column is a
new function appended to :data:`MIGRATIONS`, never an edit of an old one, so every existing
file upgrades the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .codec import from_json

RUN_COLUMNS = [
    "run_id", "workflow", "status", "inputs", "outputs", "answer", "error", "error_node",
    "started_at", "finished_at", "elapsed_ms", "total_tokens", "total_cost", "exceptions_count",
    "total_steps",
]

#: JSON-encoded columns; a value whose JSON is large lives once in ``blobs`` (see codec.py).
RUN_JSON = ("inputs", "outputs")
NODE_JSON = ("inputs", "outputs", "process_data", "metadata")

_V1 = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    inputs TEXT,
    outputs TEXT,
    answer TEXT,
    error TEXT,
    error_node TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    elapsed_ms REAL,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    total_cost REAL NOT NULL DEFAULT 0,
    exceptions_count INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_started ON runs (started_at);
CREATE INDEX runs_workflow ON runs (workflow, started_at);

-- One row per node execution (and per skipped node), in the order the run finished them.
-- Keyed by the run and that position: skipped nodes have no execution id.
CREATE TABLE node_executions (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    execution_id TEXT,
    "index" INTEGER,
    node_id TEXT NOT NULL,
    node_type TEXT NOT NULL,
    title TEXT,
    status TEXT NOT NULL,
    parent_id TEXT,
    round INTEGER,
    started_at REAL,
    finished_at REAL,
    elapsed_ms REAL,
    retries INTEGER NOT NULL DEFAULT 0,
    handle TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    inputs TEXT,
    outputs TEXT,
    process_data TEXT,
    metadata TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- Large JSON values, stored once by content hash and referenced from the columns above.
CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data TEXT NOT NULL
) WITHOUT ROWID;
"""


def _script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must be one transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1(conn: sqlite3.Connection) -> None:
    _script(conn, _V1)


# The LLM response cache (services/llm/cache.py): one reply per request key.
_V2 = """
CREATE TABLE llm_cache (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    last_hit_at REAL
) WITHOUT ROWID
"""


def _v2(conn: sqlite3.Connection) -> None:
    _script(conn, _V2)


def _v3(conn: sqlite3.Connection) -> None:
    """Costs may be unknown: an unpriced model's cost is NaN, stored as NULL, never 0.

    SQLite cannot drop a NOT NULL constraint in place, so both tables are rebuilt.
    """
    for table, column in (("runs", "total_cost"), ("node_executions", "cost")):
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (table,)).fetchone()[0]
        new_sql = sql.replace(f"{column} REAL NOT NULL DEFAULT 0", f"{column} REAL")
        if new_sql == sql:
            continue
        indexes = [row[0] for row in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL", (table,))]
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
        conn.execute(new_sql)
        conn.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
        conn.execute(f"DROP TABLE {table}_old")
        for index in indexes:
            conn.execute(index)


#: The input that names a run's conversation (chat memory reads a conversation's turns).
CONVERSATION_INPUT = "sys.conversation_id"


def _v4(conn: sqlite3.Connection) -> None:
    """A run's conversation (``sys.conversation_id``) in a column of its own, indexed, so chat
    memory finds a conversation's earlier turns without decoding every run's inputs. Runs
    stored before this version get theirs from their inputs."""
    conn.execute("ALTER TABLE runs ADD COLUMN conversation_id TEXT")
    conn.execute("CREATE INDEX runs_conversation ON runs (workflow, conversation_id, "
                 "started_at) WHERE conversation_id IS NOT NULL")
    # Inline inputs that mention the key, and large inputs kept in blobs.
    rows = conn.execute(
        "SELECT runs.rowid, coalesce(blobs.data, runs.inputs) FROM runs "
        "LEFT JOIN blobs ON runs.inputs LIKE '@%' AND blobs.hash = substr(runs.inputs, 2) "
        "WHERE runs.inputs LIKE ? OR runs.inputs LIKE '@%'",
        (f"%{CONVERSATION_INPUT}%",)).fetchall()
    updates = []
    for rowid, text in rows:
        try:
            inputs = from_json(text)
        except (ValueError, KeyError):
            continue
        found = conversation_of(inputs)
        if found is not None:
            updates.append((found, rowid))
    conn.executemany("UPDATE runs SET conversation_id = ? WHERE rowid = ?", updates)


def conversation_of(inputs: object) -> str | None:
    """The conversation id among a run's inputs, as text; None when there is none."""
    if not isinstance(inputs, dict):
        return None
    value = inputs.get(CONVERSATION_INPUT)
    return None if value is None or value == "" else str(value)


#: Who runs a ``running`` run (see liveness.py), in the order ``liveness.Owner`` takes them.
OWNER_COLUMNS = ["owner_host", "owner_boot", "owner_pid", "owner_start", "heartbeat_at"]

# Who runs a run, so a run whose process died reads as `interrupted`, never `running` forever;
# and the conversation variables each conversation's last turn left (advanced-chat).
# Only adds: it runs the same after any migration that does not add these names.
_V6 = """
ALTER TABLE runs ADD COLUMN owner_host TEXT;
ALTER TABLE runs ADD COLUMN owner_boot TEXT;
ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
ALTER TABLE runs ADD COLUMN owner_start INTEGER;
ALTER TABLE runs ADD COLUMN heartbeat_at REAL;
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
CREATE TABLE conversations (
    workflow TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    variables TEXT NOT NULL,
    last_run_id TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (workflow, conversation_id)
) WITHOUT ROWID
"""

# Durable runs: versions of workflows, and checkpoints (store/checkpoints.py).
_V5 = """
-- Each workflow a run ran, once per content hash: its native YAML (secrets never in it).
CREATE TABLE versions (
    hash TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;

-- What a resume needs beyond the writes: the run's inputs, sys values, options, and the names
-- (never the values) of the secrets it was granted. `state` is sealed when `sealed` is set.
CREATE TABLE checkpoints (
    run_id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    durability TEXT NOT NULL,
    sealed TEXT,
    state TEXT NOT NULL,
    pid INTEGER,
    host TEXT,
    process_start TEXT
) WITHOUT ROWID;

-- One row per finished top-level node, in the order they finished: its status, edge decision
-- and outputs (JSON, large values in blobs, sealed for runs granted secrets).
CREATE TABLE checkpoint_writes (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    status TEXT NOT NULL,
    handle TEXT,
    steps INTEGER NOT NULL,
    outputs TEXT,
    conversation TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID
"""


def _v5(conn: sqlite3.Connection) -> None:
    _script(conn, _V5)
    conn.execute("ALTER TABLE runs ADD COLUMN version TEXT")


def _v6(conn: sqlite3.Connection) -> None:
    _script(conn, _V6)


# Human input: the forms paused runs wait on, and their answers (store/forms.py).
_V7 = """
CREATE TABLE forms (
    run_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    -- The credential that answers the form over REST.
    token TEXT NOT NULL UNIQUE,
    -- The form as people are shown it (JSON, redacted of the run's secrets).
    form TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    -- waiting, answered
    status TEXT NOT NULL,
    action TEXT,
    -- The answer's values (JSON, sealed for runs granted secrets).
    answer TEXT,
    answered_at REAL,
    PRIMARY KEY (run_id, node_id)
) WITHOUT ROWID;
CREATE INDEX forms_waiting ON forms (status) WHERE status = 'waiting'
"""


def _v7(conn: sqlite3.Connection) -> None:
    _script(conn, _V7)


# Batches (store/batches.py): which run each row of a batch ran as, so an interrupted batch
# resumes without running its finished rows again; and evaluations, kept to compare later.
_V8 = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    created_at REAL NOT NULL,
    total INTEGER NOT NULL,
    inputs_hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batch_rows (
    batch_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (batch_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evaluations (
    eval_id TEXT PRIMARY KEY,
    name TEXT,
    created_at REAL NOT NULL,
    workflows TEXT NOT NULL,
    summary TEXT NOT NULL,
    rows TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS evaluations_created ON evaluations (created_at)
"""


def _v8(conn: sqlite3.Connection) -> None:
    _script(conn, _V8)


# API keys of `cellwire serve` (store/keys.py): only a hash of each key is kept, never the key.
_V9 = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    -- viewer, runner, admin (cellwire.serve.principal.Role)
    role TEXT NOT NULL,
    -- The one app the key may use (NULL: every app the server serves)
    app TEXT,
    name TEXT,
    created_at REAL NOT NULL,
    last_used_at REAL,
    revoked_at REAL
) WITHOUT ROWID
"""


def _v9(conn: sqlite3.Connection) -> None:
    _script(conn, _V9)


# Served chat conversations (``cellwire serve``): the name a client gave one, and whether it
# was deleted. Their turns are the runs with that conversation id.
_V10 = """
CREATE TABLE IF NOT EXISTS conversation_names (
    workflow TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    name TEXT,
    user_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deleted_at REAL,
    PRIMARY KEY (workflow, conversation_id)
) WITHOUT ROWID
"""


def _v10(conn: sqlite3.Connection) -> None:
    _script(conn, _V10)


Migration = Callable[[sqlite3.Connection], None]

MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10]


class SchemaTooNew(RuntimeError):
    """The file was written by a newer cellwire than this one."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to the newest schema, one migration per transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SchemaTooNew(
            f"the run store has schema version {version}, this cellwire knows up to "
            f"{len(MIGRATIONS)}; upgrade cellwire or point CELLWIRE_HOME at another folder"
        )
    while version < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < len(MIGRATIONS):
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version
