"""Sealing what the checkpoints of a run granted secrets hold: AES-GCM with the store key.

A run granted secrets knows their real values, and so may its nodes' outputs (a header built
from a token). Redacting them would make a resumed run compute with ``***``; so the values a
checkpoint of such a run writes (its inputs and every node's outputs) are encrypted instead,
each bound to its run and place, and opened again only by a resume given the same key. The
secrets themselves are never written, sealed or not: a resume is granted them again.

The key is ``$CELLWIRE_STORE_KEY`` (32 random bytes, URL-safe base64: ``python -c "import
base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"``), else the file
``store.key`` in the user's config folder, created private (0600) on first use: never in the
project folder, where a store may be copied or shared.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import tempfile
from typing import TYPE_CHECKING

from .home import config_dir

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "CELLWIRE_STORE_KEY"
KEY_FILE = "store.key"
#: Starts a sealed column value (never JSON, never a blob reference).
SEALED_PREFIX = "!"
_NONCE = 12


class SealError(RuntimeError):
    """A sealed value cannot be written or read; the message says why and what to do."""


class Sealer:
    """Seals and opens text with one key; ``key_id`` tells keys apart without showing them."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes):
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise SealError("checkpoints of runs granted secrets are encrypted with the "
                            "'cryptography' package, which is not installed: pip install "
                            "cryptography, or run with durability='exit'") from exc
        self._aead: AESGCM = AESGCM(key)
        self.key_id = hashlib.sha256(b"cellwire store key\0" + key).hexdigest()[:16]

    def seal(self, text: str, where: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, text.encode(), where.encode())
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, text: str, where: str) -> str:
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(text[len(SEALED_PREFIX):])
        try:
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], where.encode()).decode()
        except InvalidTag:
            raise SealError(f"a sealed checkpoint value ({where}) does not open with this "
                            "key: it was written with another store key, or altered") from None


def sealer() -> Sealer:
    """The :class:`Sealer` of the current store key (``$CELLWIRE_STORE_KEY`` or the key file)."""
    raw = os.environ.get(KEY_ENV, "").strip()
    if raw:
        try:
            key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise SealError(f"{KEY_ENV} is not 32 bytes in URL-safe base64; make one with "
                            "python -c \"import base64, os; print(base64.urlsafe_b64encode("
                            "os.urandom(32)).decode())\", or unset it to use the key file")
        return _sealer(key)
    return _sealer(_key_file())


@functools.lru_cache(maxsize=4)
def _sealer(key: bytes) -> Sealer:
    return Sealer(key)


def _key_file() -> bytes:
    folder = config_dir(create=True)
    path = folder / KEY_FILE
    if not path.exists():
        # Written whole to a private temporary file, then linked into place: a reader never
        # sees half a key, and of two processes creating it at once, one key wins.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".store-key-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, base64.urlsafe_b64encode(os.urandom(32)) + b"\n")
            os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    try:
        key = base64.urlsafe_b64decode(path.read_text().strip())
    except (OSError, binascii.Error, ValueError) as exc:
        raise SealError(f"cannot read the store key {path}: {exc}") from exc
    if len(key) != 32:
        raise SealError(f"the store key {path} is not 32 bytes in URL-safe base64; restore "
                        f"it from a backup, or set {KEY_ENV}")
    return key


__all__ = ["KEY_ENV", "KEY_FILE", "SEALED_PREFIX", "SealError", "Sealer", "sealer"]
