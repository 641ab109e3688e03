"""OIDCProvider against a local issuer we hold the keys of (so claims can be made wrong while
the signature stays valid): a real uvicorn app serving discovery and a JWKS over HTTP."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from gateway.oidc import OIDCProvider, TokenError
from tests.conftest import free_port
from tests.gateway.conftest import RunningServer, id_claims


class LocalIssuer:
    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/dex"
        self.keys: list[RSAKey | ECKey | OKPKey] = [
            RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"}),
            ECKey.generate_key("P-256", parameters={"kid": "k2", "use": "sig"}),
            OKPKey.generate_key("Ed25519", parameters={"kid": "k3", "use": "sig"}),
        ]
        self.jwks_hits = 0
        app = FastAPI()

        @app.get("/dex/.well-known/openid-configuration")
        async def discovery() -> dict:
            return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/keys"}

        @app.get("/dex/keys")
        async def keys() -> dict:
            self.jwks_hits += 1
            return {"keys": [k.as_dict(private=False) for k in self.keys]}

        self.server = RunningServer(app, self.port)

    def token(self, key_index: int = 0, alg: str = "RS256", **over: object) -> str:
        mine = {"sub": "s", "email": "u@example.com", "groups": ["g"]}
        claims = id_claims(self.issuer, **{**mine, **over})
        key = self.keys[key_index]
        return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


@pytest.fixture(scope="module")
async def issuer():
    local = LocalIssuer()
    await local.server.start()
    yield local
    await local.server.stop()


def provider(issuer: LocalIssuer, **kw) -> OIDCProvider:
    return OIDCProvider(issuer.issuer, ["shipyard", "cli"], leeway=30, **kw)


@pytest.mark.parametrize(("index", "alg"), [(0, "RS256"), (1, "ES256"), (2, "EdDSA")])
async def test_verify_accepts_asymmetric_algorithms(issuer, index, alg) -> None:
    v = await provider(issuer).verify(issuer.token(index, alg))
    assert v.user == "u@example.com" and v.groups == ("g",)


async def test_verify_accepts_any_configured_audience(issuer) -> None:
    v = await provider(issuer).verify(issuer.token(aud=["other", "cli"]))
    assert v.user == "u@example.com"


# Times are offsets from when the test runs (not from collection, minutes earlier).
@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"exp": -120}, "expired"),
        ({"nbf": 120}, "not yet valid"),
        ({"iat": 120}, "future"),
        ({"aud": "someone-else"}, "audience"),
        ({"email": None}, "email"),
    ],
    ids=["expired", "nbf-future", "iat-future", "wrong-aud", "no-user-claim"],
)
async def test_verify_rejects_bad_claims(issuer, over, why) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf", "iat") else v for k, v in over.items()}
    with pytest.raises(TokenError, match=why):
        await provider(issuer).verify(issuer.token(**claims))


async def test_verify_leeway_allows_small_skew(issuer) -> None:
    v = await provider(issuer).verify(issuer.token(exp=int(time.time()) - 5))
    assert v.user == "u@example.com"


async def test_verify_unknown_kid_refetch_is_rate_limited(issuer) -> None:
    p = provider(issuer, min_refetch_seconds=60)
    await p.verify(issuer.token())
    hits = issuer.jwks_hits
    new = RSAKey.generate_key(2048, parameters={"kid": "rotated", "use": "sig"})
    issuer.keys.append(new)
    token = jwt.encode(
        {"alg": "RS256", "kid": "rotated"},
        {
            "iss": issuer.issuer,
            "aud": "shipyard",
            "email": "r@example.com",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        new,
    )
    # Within the refetch interval: no new fetch, refused.
    with pytest.raises(TokenError, match="unknown signing key"):
        await p.verify(token)
    assert issuer.jwks_hits == hits
    p.min_refetch_seconds = 0
    assert (await p.verify(token)).user == "r@example.com"
    assert issuer.jwks_hits == hits + 1
