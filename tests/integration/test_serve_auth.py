"""The guard of served apps on a real uvicorn server: API keys, JWTs, roles, apps, rate and
concurrency limits, and the request-body limit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_server import running
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cellwire.serve.auth import JwtConfig, KeyGuard
from cellwire.serve.errors import ServeError
from cellwire.serve.limits import BodyLimit, RateLimiter, RunSlots
from cellwire.serve.principal import Role
from cellwire.store import RunStore
from cellwire.store.keys import create_key, find_key, revoke_key

SECRET = "a-shared-secret-of-at-least-32-bytes!!"


class FakeClock:
    """Test double of ``time.monotonic``: moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(guard: KeyGuard, *, max_body: int | None = None) -> Any:
    """A tiny served app: the routes ask the guard as the Service API's routes do."""
    app = FastAPI()
    app.state.guard = guard
    held: dict[str, Any] = {}

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    @app.get("/v1/apps/{name}/info")
    async def info(name: str, request: Request) -> dict[str, Any]:
        who = await request.app.state.guard.check(request, app=name, role=Role.VIEWER)
        return {"key_id": who.key_id, "role": who.role.value, "app": who.app}

    @app.post("/v1/apps/{name}/run")
    async def run(name: str, request: Request) -> dict[str, Any]:
        who = await request.app.state.guard.check(request, app=name, role=Role.RUNNER)
        slot = request.app.state.guard.run_slot(who)
        held.setdefault(who.key_id, []).append(slot)
        return {"running": len(held[who.key_id])}

    @app.post("/v1/finish")
    async def finish(request: Request) -> dict[str, Any]:
        who = await request.app.state.guard.check(request, app=None, role=Role.VIEWER)
        slot = held[who.key_id].pop(0)
        slot.release()
        slot.release()  # idempotent: frees one slot, not two
        return {}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"size": len(body)}

    @app.post("/parsed")
    async def parsed(payload: dict[str, Any]) -> dict[str, Any]:
        # FastAPI reads this body itself, and answers 400 when reading it fails.
        return {"keys": len(payload)}

    return BodyLimit(app, max_body) if max_body is not None else app


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["status"] == status and body["message"]
    return body


# -- API keys ---------------------------------------------------------------------------------


def test_keys_roles_and_apps(store: RunStore) -> None:
    _, viewer = create_key(store, "viewer")
    _, runner = create_key(store, "runner", app="demo")
    _, admin = create_key(store, "admin")
    with running(make_app(KeyGuard(store))) as url, httpx.Client(base_url=url) as client:
        missing = client.get("/v1/apps/demo/info")
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert_error(client.get("/v1/apps/demo/info", headers={"Authorization": viewer}),
                     401, "unauthorized")  # no Bearer scheme
        assert_error(client.get("/v1/apps/demo/info", headers=bearer(viewer + "x")),
                     401, "unauthorized")
        assert_error(client.get("/v1/apps/demo/info", headers=bearer("app-made-up")),
                     401, "unauthorized")

        ok = client.get("/v1/apps/demo/info", headers=bearer(viewer))
        assert ok.status_code == 200 and ok.json()["role"] == "viewer"
        # A viewer may read but not run.
        assert "needs runner" in assert_error(
            client.post("/v1/apps/demo/run", headers=bearer(viewer)), 403, "forbidden")["message"]
        # A key bound to one app: that app only.
        assert client.post("/v1/apps/demo/run", headers=bearer(runner)).status_code == 200
        assert "only use app 'demo'" in assert_error(
            client.get("/v1/apps/other/info", headers=bearer(runner)), 403, "forbidden")["message"]
        # Admin includes runner and viewer, on every app.
        assert client.post("/v1/apps/other/run", headers=bearer(admin)).status_code == 200
        assert client.get("/v1/apps/demo/info", headers=bearer(admin)).status_code == 200


def test_a_revoked_key_stops_working_at_once(store: RunStore) -> None:
    stored, key = create_key(store, "viewer")
    with running(make_app(KeyGuard(store))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v1/apps/demo/info", headers=bearer(key)).status_code == 200
        assert revoke_key(store, stored.key_id)
        assert_error(client.get("/v1/apps/demo/info", headers=bearer(key)), 401, "unauthorized")


def test_a_key_revoked_by_another_process_stops_working(tmp_path: Path) -> None:
    """`cellwire keys revoke` runs in its own process on the same file."""
    db = tmp_path / "runs.db"
    server_store = RunStore(db)
    try:
        stored, key = create_key(server_store, "viewer")
        with running(make_app(KeyGuard(server_store))) as url, \
                httpx.Client(base_url=url) as client:
            assert client.get("/v1/apps/a/info", headers=bearer(key)).status_code == 200
            with RunStore(db) as other:
                assert revoke_key(other, stored.key_id)
            assert_error(client.get("/v1/apps/a/info", headers=bearer(key)), 401,
                         "unauthorized")
    finally:
        server_store.close()


def test_a_used_key_records_when(store: RunStore) -> None:
    stored, key = create_key(store, "viewer")
    with running(make_app(KeyGuard(store))) as url, httpx.Client(base_url=url) as client:
        assert client.get("/v1/apps/a/info", headers=bearer(key)).status_code == 200
    assert store.flush(10)
    found = find_key(store, key)
    assert found is not None and found.last_used_at is not None
    assert found.last_used_at >= stored.created_at


# -- JWT --------------------------------------------------------------------------------------


def _claims(**extra: Any) -> dict[str, Any]:
    now = dt.datetime.now(tz=dt.UTC)
    return {"sub": "ada", "role": "runner", "exp": now + dt.timedelta(minutes=5), **extra}


def test_hs256_tokens_map_to_roles_and_apps(store: RunStore) -> None:
    config = JwtConfig.from_env({"CELLWIRE_JWT_SECRET": SECRET, "CELLWIRE_JWT_ISSUER": "idp",
                                 "CELLWIRE_JWT_AUDIENCE": "cellwire"})
    assert config is not None and SECRET not in repr(config)
    good = _claims(iss="idp", aud="cellwire")
    with running(make_app(KeyGuard(store, jwt=config))) as url, \
            httpx.Client(base_url=url) as client:
        token = jwt.encode(good, SECRET, algorithm="HS256")
        ok = client.get("/v1/apps/demo/info", headers=bearer(token))
        assert ok.status_code == 200 and ok.json() == {"key_id": "jwt:ada", "role": "runner",
                                                       "app": None}
        assert client.post("/v1/apps/demo/run", headers=bearer(token)).status_code == 200

        viewer = jwt.encode({**good, "role": "viewer"}, SECRET, algorithm="HS256")
        assert_error(client.post("/v1/apps/demo/run", headers=bearer(viewer)), 403, "forbidden")
        bound = jwt.encode({**good, "app": "demo"}, SECRET, algorithm="HS256")
        assert client.post("/v1/apps/demo/run", headers=bearer(bound)).status_code == 200
        assert_error(client.post("/v1/apps/x/run", headers=bearer(bound)), 403, "forbidden")

        refused = {
            "expired": {**good, "exp": dt.datetime.now(tz=dt.UTC) - dt.timedelta(minutes=1)},
            "no expiry": {k: v for k, v in good.items() if k != "exp"},
            "wrong issuer": {**good, "iss": "someone-else"},
            "wrong audience": {**good, "aud": "another-service"},
            "no role": {k: v for k, v in good.items() if k != "role"},
            "unknown role": {**good, "role": "owner"},
        }
        for why, claims in refused.items():
            token = jwt.encode(claims, SECRET, algorithm="HS256")
            response = client.get("/v1/apps/demo/info", headers=bearer(token))
            assert response.status_code == 401, why
        expired = jwt.encode(refused["expired"], SECRET, algorithm="HS256")
        assert "expired" in client.get("/v1/apps/demo/info",
                                       headers=bearer(expired)).json()["message"]
        forged = jwt.encode(good, "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
        assert_error(client.get("/v1/apps/demo/info", headers=bearer(forged)), 401,
                     "unauthorized")
        # "none" is never an accepted algorithm.
        unsigned = jwt.encode(good, None, algorithm="none")
        assert_error(client.get("/v1/apps/demo/info", headers=bearer(unsigned)), 401,
                     "unauthorized")


def test_jwts_are_refused_when_the_server_has_no_jwt_key(store: RunStore) -> None:
    token = jwt.encode(_claims(), SECRET, algorithm="HS256")
    with running(make_app(KeyGuard(store))) as url, httpx.Client(base_url=url) as client:
        assert_error(client.get("/v1/apps/demo/info", headers=bearer(token)), 401,
                     "unauthorized")


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_public_key_tokens(store: RunStore, tmp_path: Path, kind: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                    if kind == "rsa" else ec.generate_private_key(ec.SECP256R1()))
    other: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                  if kind == "rsa" else ec.generate_private_key(ec.SECP256R1()))
    algorithm = "RS256" if kind == "rsa" else "ES256"
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    # The environment may give the PEM text or a file holding it.
    (tmp_path / "key.pem").write_text(pem)
    for value in (pem, str(tmp_path / "key.pem")):
        config = JwtConfig.from_env({"CELLWIRE_JWT_PUBLIC_KEY": value})
        assert config is not None and config.algorithms == (algorithm,)
    with running(make_app(KeyGuard(store, jwt=config))) as url, \
            httpx.Client(base_url=url) as client:
        token = jwt.encode(_claims(role="viewer"), private, algorithm=algorithm)
        ok = client.get("/v1/apps/demo/info", headers=bearer(token))
        assert ok.status_code == 200 and ok.json()["role"] == "viewer"
        forged = jwt.encode(_claims(role="admin"), other, algorithm=algorithm)
        assert_error(client.get("/v1/apps/demo/info", headers=bearer(forged)), 401,
                     "unauthorized")
        # An HS256 token "signed" with the public key text must not pass (algorithm confusion).
        confused = _hs256_with(pem)
        assert_error(client.get("/v1/apps/demo/info", headers=bearer(confused)), 401,
                     "unauthorized")


def _hs256_with(secret: str) -> str:
    """An HS256 token whose HMAC key is ``secret`` (pyjwt refuses PEM keys, so sign by hand)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"role": "admin", "exp": 9999999999}).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def test_jwt_configuration_errors(tmp_path: Path) -> None:
    assert JwtConfig.from_env({}) is None
    with pytest.raises(ValueError, match="not both"):
        JwtConfig.from_env({"CELLWIRE_JWT_SECRET": "s", "CELLWIRE_JWT_PUBLIC_KEY": "p"})
    with pytest.raises(ValueError, match="neither PEM text nor a readable file"):
        JwtConfig.from_env({"CELLWIRE_JWT_PUBLIC_KEY": str(tmp_path / "missing.pem")})
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError, match="not a PEM public key"):
        JwtConfig.from_env({"CELLWIRE_JWT_PUBLIC_KEY": str(tmp_path / "bad.pem")})


# -- limits -----------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(store: RunStore) -> None:
    clock = FakeClock()
    _, key = create_key(store, "viewer")
    _, other = create_key(store, "viewer")
    guard = KeyGuard(store, rate=0.3, burst=2, clock=clock)
    with running(make_app(guard)) as url, httpx.Client(base_url=url) as client:
        for _ in range(2):
            assert client.get("/v1/apps/a/info", headers=bearer(key)).status_code == 200
        limited = client.get("/v1/apps/a/info", headers=bearer(key))
        assert_error(limited, 429, "too_many_requests")
        # One token comes back in 1 / 0.3 = 3.33 s: whole seconds, rounded up.
        assert limited.headers["retry-after"] == "4"
        # Buckets are per key.
        assert client.get("/v1/apps/a/info", headers=bearer(other)).status_code == 200
        clock.now += 2.0
        assert client.get("/v1/apps/a/info", headers=bearer(key)).headers["retry-after"] == "2"
        clock.now += 1.4
        assert client.get("/v1/apps/a/info", headers=bearer(key)).status_code == 200
        # Bad credentials are refused before any bucket is spent or made.
        assert_error(client.get("/v1/apps/a/info", headers=bearer("app-nope")), 401,
                     "unauthorized")


def test_token_bucket_refills_up_to_its_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 3, clock=clock)
    for _ in range(3):
        limiter.check("k")
    with pytest.raises(ServeError) as caught:
        limiter.check("k")
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "1"}
    clock.now += 3600  # a long idle time refills to the burst, never beyond
    for _ in range(3):
        limiter.check("k")
    with pytest.raises(ServeError):
        limiter.check("k")
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0, 1)


def test_concurrent_runs_per_key(store: RunStore) -> None:
    _, key = create_key(store, "runner")
    _, other = create_key(store, "runner")
    guard = KeyGuard(store, max_concurrent_runs=2)
    with running(make_app(guard)) as url, httpx.Client(base_url=url) as client:
        assert client.post("/v1/apps/a/run", headers=bearer(key)).json() == {"running": 1}
        assert client.post("/v1/apps/a/run", headers=bearer(key)).json() == {"running": 2}
        full = client.post("/v1/apps/a/run", headers=bearer(key))
        assert_error(full, 429, "too_many_requests")
        assert full.headers["retry-after"] == "1"
        assert client.post("/v1/apps/a/run", headers=bearer(other)).status_code == 200
        # Releasing a slot twice frees one slot only.
        assert client.post("/v1/finish", headers=bearer(key)).status_code == 200
        assert client.post("/v1/apps/a/run", headers=bearer(key)).status_code == 200
        assert_error(client.post("/v1/apps/a/run", headers=bearer(key)), 429,
                     "too_many_requests")


def test_run_slots_release_once() -> None:
    slots = RunSlots(1)
    slot = slots.take("k")
    with pytest.raises(ServeError):
        slots.take("k")
    slot.release()
    slot.release()
    assert slots.active("k") == 0
    again = slots.take("k")
    assert slots.active("k") == 1
    slot.release()  # the old slot's release must not free the new one
    assert slots.active("k") == 1
    again.release()
    assert RunSlots(None).take("k") is not None


def test_body_limit_refuses_large_bodies(store: RunStore) -> None:
    limit = 1000
    with running(make_app(KeyGuard(store), max_body=limit)) as url, \
            httpx.Client(base_url=url) as client:
        assert client.post("/echo", content=b"x" * limit).json() == {"size": limit}
        declared = client.post("/echo", content=b"x" * (limit + 1))
        assert_error(declared, 413, "request_entity_too_large")

        def chunks(total: int) -> Iterator[bytes]:
            for _ in range(total // 100):
                yield b"y" * 100

        # Streamed without Content-Length (chunked): counted as it arrives.
        streamed = client.post("/echo", content=chunks(5000))
        assert "content-length" not in streamed.request.headers
        assert_error(streamed, 413, "request_entity_too_large")
        small = client.post("/echo", content=chunks(500))
        assert small.status_code == 200 and small.json() == {"size": 500}

        def json_chunks(total: int) -> Iterator[bytes]:
            yield b'{"a": "'
            for _ in range(total // 100):
                yield b"z" * 100
            yield b'"}'

        # A body the framework parses itself: its own 400 is replaced by the 413.
        assert_error(client.post("/parsed", content=json_chunks(5000),
                                 headers={"Content-Type": "application/json"}),
                     413, "request_entity_too_large")
        assert client.post("/parsed", json={"a": 1}).json() == {"keys": 1}
