"""The guard of a served app: who calls (API key or JWT), whether they may, and how often.

``Authorization: Bearer <credential>`` carries either an API key made with ``cellwire keys
create`` (stored hashed, see :mod:`cellwire.store.keys`) or, when the server is configured for
them, a JWT whose ``role`` claim (and optional ``app`` claim) maps to the same roles:

* ``CELLWIRE_JWT_SECRET``: HS256 tokens signed with that shared secret; or
* ``CELLWIRE_JWT_PUBLIC_KEY``: RS256 or ES256 tokens (PEM text, or the path of a PEM file; the
  algorithm follows the key's type);
* ``CELLWIRE_JWT_ISSUER`` / ``CELLWIRE_JWT_AUDIENCE``: when set, tokens must carry them.

No or bad credential: 401 ``unauthorized``; a role or app the caller lacks: 403 ``forbidden``;
over the key's rate: 429 ``too_many_requests`` (:mod:`cellwire.serve.limits`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from cellwire.store import RunStore
from cellwire.store.keys import KEY_PREFIX, find_key, touch_key

from .errors import ServeError
from .limits import Clock, RateLimiter, RunSlots
from .principal import Principal, Role, RunSlot

JWT_SECRET_ENV = "CELLWIRE_JWT_SECRET"
JWT_PUBLIC_KEY_ENV = "CELLWIRE_JWT_PUBLIC_KEY"
JWT_ISSUER_ENV = "CELLWIRE_JWT_ISSUER"
JWT_AUDIENCE_ENV = "CELLWIRE_JWT_AUDIENCE"

#: Seconds between two writes of a key's ``last_used_at`` (a busy key is not a write per call).
TOUCH_EVERY = 60.0

# Dify's own header for a 401 (libs/external_api.py).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="api"'}


def _unauthorized(message: str) -> ServeError:
    return ServeError(401, "unauthorized", message, dict(_CHALLENGE))


@dataclass(frozen=True)
class JwtConfig:
    """How JWT bearer tokens are verified: the key, its algorithms, and the claims required.

    ``key`` is the HS256 secret or a public key (PEM text); ``exp`` is always required.
    """

    key: Any
    algorithms: tuple[str, ...]
    issuer: str | None = None
    audience: str | None = None

    def __repr__(self) -> str:  # the secret never reaches a log
        return f"JwtConfig(algorithms={self.algorithms!r}, issuer={self.issuer!r}, " \
               f"audience={self.audience!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JwtConfig | None:
        """The configuration the environment gives, or None when it names no key; ValueError
        for a key that cannot be used (both set, a public key that is not PEM)."""
        env = os.environ if environ is None else environ
        secret = env.get(JWT_SECRET_ENV) or None
        public = env.get(JWT_PUBLIC_KEY_ENV) or None
        issuer = env.get(JWT_ISSUER_ENV) or None
        audience = env.get(JWT_AUDIENCE_ENV) or None
        if secret and public:
            raise ValueError(f"set {JWT_SECRET_ENV} (HS256) or {JWT_PUBLIC_KEY_ENV} "
                             "(RS256/ES256), not both")
        if secret:
            return cls(secret, ("HS256",), issuer, audience)
        if public:
            return cls.public(public, issuer=issuer, audience=audience)
        return None

    @classmethod
    def public(cls, pem_or_path: str, *, issuer: str | None = None,
               audience: str | None = None) -> JwtConfig:
        """RS256 (RSA key) or ES256 (EC key) verification with a PEM public key, given as its
        text or the path of a file holding it."""
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        text = pem_or_path
        if "-----BEGIN" not in text:
            try:
                text = Path(pem_or_path).expanduser().read_text()
            except OSError as exc:
                raise ValueError(f"{JWT_PUBLIC_KEY_ENV} is neither PEM text nor a readable "
                                 f"file ({exc.strerror or exc}); give the public key in PEM") \
                    from None
        try:
            key = load_pem_public_key(text.encode())
        except ValueError as exc:
            raise ValueError(f"{JWT_PUBLIC_KEY_ENV} is not a PEM public key ({exc}); give "
                             "the '-----BEGIN PUBLIC KEY-----' block") from None
        if isinstance(key, rsa.RSAPublicKey):
            return cls(key, ("RS256",), issuer, audience)
        if isinstance(key, ec.EllipticCurvePublicKey):
            return cls(key, ("ES256",), issuer, audience)
        raise ValueError(f"{JWT_PUBLIC_KEY_ENV} is a {type(key).__name__}; give an RSA "
                         "(RS256) or EC P-256 (ES256) public key")


class KeyGuard:
    """The :class:`~cellwire.serve.principal.Guard` of ``cellwire serve``: API keys from
    ``store``, JWTs when ``jwt`` is given, ``rate`` requests per second per key (bursts of
    ``burst``; None: no rate limit) and ``max_concurrent_runs`` runs per key (None: no limit).
    """

    def __init__(self, store: RunStore, *, rate: float | None = 50.0, burst: int = 100,
                 max_concurrent_runs: int | None = 64, jwt: JwtConfig | None = None,
                 clock: Clock = time.monotonic):
        self.store = store
        self.jwt = jwt
        self.limiter = RateLimiter(rate, burst, clock=clock) if rate is not None else None
        self.slots = RunSlots(max_concurrent_runs)
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()

    async def check(self, request: Request, *, app: str | None, role: Role) -> Principal:
        """The caller of ``request``, allowed ``role`` on ``app`` and within its rate; else
        ServeError 401, 403 or 429."""
        principal = self.authenticate(request.headers.get("authorization"))
        if not principal.may(role, app):
            raise ServeError(403, "forbidden", _refusal(principal, role, app))
        if self.limiter is not None:
            self.limiter.check(principal.key_id)
        return principal

    def run_slot(self, principal: Principal) -> RunSlot:
        """One of the caller's concurrent-run slots, or ServeError 429."""
        return self.slots.take(principal.key_id)

    def authenticate(self, header: str | None) -> Principal:
        """The caller an ``Authorization`` header names; ServeError 401 when it names none."""
        if not header:
            raise _unauthorized("Authorization header must be provided and start with 'Bearer'")
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized("Authorization header must be provided and start with 'Bearer'")
        if credential.startswith(KEY_PREFIX):
            return self._api_key(credential)
        if self.jwt is not None and credential.count(".") == 2:
            return _jwt_principal(credential, self.jwt)
        raise _unauthorized("Access token is invalid")

    def _api_key(self, credential: str) -> Principal:
        # Run on the event loop: one indexed read on the store's connection, no write waited for.
        found = find_key(self.store, credential)
        if found is None or found.revoked:
            raise _unauthorized("Access token is invalid")
        try:
            role = Role(found.role)
        except ValueError:
            raise _unauthorized("Access token is invalid") from None
        self._touch(found.key_id)
        return Principal(found.key_id, role, found.app)

    def _touch(self, key_id: str) -> None:
        now = time.time()
        with self._touch_lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < TOUCH_EVERY:
                return
            self._touched[key_id] = now
        touch_key(self.store, key_id, now)


def _jwt_principal(token: str, config: JwtConfig) -> Principal:
    import jwt

    try:
        claims = jwt.decode(token, config.key, algorithms=list(config.algorithms),
                            issuer=config.issuer, audience=config.audience,
                            options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("Access token has expired") from None
    except jwt.InvalidTokenError:
        raise _unauthorized("Access token is invalid") from None
    try:
        role = Role(str(claims.get("role")))
    except ValueError:
        raise _unauthorized("Access token has no valid role claim (viewer, runner or admin)") \
            from None
    app = claims.get("app")
    if app is not None and not isinstance(app, str):
        raise _unauthorized("Access token's app claim must be an app name")
    subject = claims.get("sub")
    key_id = f"jwt:{subject}" if isinstance(subject, str) and subject else f"jwt:{app or '*'}"
    return Principal(key_id, role, app or None)


def _refusal(principal: Principal, role: Role, app: str | None) -> str:
    if principal.app is not None and app is not None and principal.app != app:
        return f"This key may only use app {principal.app!r}."
    return f"This key's role is {principal.role.value}; this needs {role.value}."


__all__ = ["JWT_AUDIENCE_ENV", "JWT_ISSUER_ENV", "JWT_PUBLIC_KEY_ENV", "JWT_SECRET_ENV",
           "JwtConfig", "KeyGuard"]
