"""Which workflow files the user trusts, by content hash (as Jupyter trusts notebooks).

Code in a workflow the user wrote in a cell or in Python runs in the kernel. Code in a workflow
read from a file (Dify DSL or native YAML) or received over the network is untrusted: it runs
in the sandbox and may not reach loopback or private addresses, until the user trusts that
file's exact contents with ``cellwire trust FILE`` (or ``trusted=True``, ``--trust``). Editing
the file un-trusts it, since its hash changes.

The records live in the user's configuration folder (``trusted.json``, private to the user),
never in a project folder that a cloned repository could ship.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellwire.model.yaml12 import read_text
from cellwire.store.home import config_dir

if TYPE_CHECKING:
    from cellwire.model import Workflow

TRUST_FILE = "trusted.json"
_lock = threading.Lock()


def content_hash(content: str | bytes) -> str:
    """``sha256:<hex>`` of a file's contents (text is hashed as UTF-8)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return "sha256:" + hashlib.sha256(data).hexdigest()


def records_path() -> Path:
    return config_dir() / TRUST_FILE


def _read() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(records_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # An unreadable record trusts nothing: untrusted code is sandboxed, never let through.
        return {}
    return data.get("trusted", {}) if isinstance(data, dict) else {}


def _write(records: dict[str, dict[str, Any]]) -> None:
    folder = config_dir(create=True)
    fd, tmp = tempfile.mkstemp(prefix=".trusted-", dir=folder)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": 1, "trusted": records}, out, indent=1, sort_keys=True)
        os.replace(tmp, folder / TRUST_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def is_trusted(content: str | bytes) -> bool:
    """Whether the user trusted a file with exactly these contents."""
    return content_hash(content) in _read()


def trust(path: str | os.PathLike[str]) -> str:
    """Trust the current contents of the file at ``path``; returns their hash."""
    file = Path(path)
    digest = content_hash(read_text(file))  # the text cellwire.load reads, BOM and all
    with _lock:
        records = _read()
        records[digest] = {"path": str(file.resolve()),
                           "trusted_at": datetime.now(UTC).isoformat(timespec="seconds")}
        _write(records)
    return digest


def untrust(path: str | os.PathLike[str]) -> bool:
    """Forget the trust in the file's current contents (and any record naming its path);
    True when something was forgotten."""
    file = Path(path)
    resolved = str(file.resolve())
    digest = content_hash(read_text(file)) if file.is_file() else None
    with _lock:
        records = _read()
        kept = {h: r for h, r in records.items() if h != digest and r.get("path") != resolved}
        if len(kept) == len(records):
            return False
        _write(kept)
    return True


def trusted_files() -> list[dict[str, Any]]:
    """Every record: ``hash``, ``path`` (where it was when trusted), ``trusted_at``."""
    return [{"hash": h, **r} for h, r in sorted(_read().items(), key=lambda kv: kv[1]["path"])]


def describe(workflow: Workflow) -> str:
    """One line on whether ``workflow`` is trusted and where its code runs, with the fix."""
    where = workflow.origin or f"workflow {workflow.name!r}"
    code = workflow.code_nodes()
    shown = ", ".join(code[:5]) + (", ..." if len(code) > 5 else "")
    holds = f"{len(code)} code node{'s' if len(code) != 1 else ''} ({shown})" if code else ""
    if workflow.trusted:
        return f"{where}: trusted" + (f"; its {holds} run in the kernel" if code else "")
    runs = f"; its {holds} run in the sandbox" if code else ""
    fix = f"cellwire trust {workflow.origin}" if workflow.origin else "trusted=True"
    return (f"{where}: not trusted{runs}; its HTTP nodes may not reach loopback or private "
            f"addresses. To trust these exact contents: {fix}")
