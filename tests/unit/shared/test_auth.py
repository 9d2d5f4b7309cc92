"""Bearer tokens: the platform's own (HS256) and an OpenID Connect provider's (keys from its JWKS)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.auth import InvalidToken, Principal, Role, TokenIssuer, TokenUse, TokenVerifier
from shared.settings import SharedSettings

pytestmark = pytest.mark.unit

OIDC = {
    "auth_oidc_issuer": "https://id.example.com/",
    "auth_oidc_jwks_url": "https://id.example.com/.well-known/jwks.json",
    "auth_oidc_audience": "shop-api",
    "auth_oidc_role_claim": "roles",
    "auth_oidc_merchant_claim": "shop_id",
}


def settings(**changes: Any) -> SharedSettings:
    return SharedSettings(**changes)


async def test_a_platform_token_verifies_to_its_principal() -> None:
    issuer = TokenIssuer(settings())
    token = issuer.access_token(Principal("m-1", Role.MERCHANT, merchant_id="m-1"))

    principal = await TokenVerifier(settings()).verify(token)

    assert principal == Principal("m-1", Role.MERCHANT, merchant_id="m-1")
    assert principal.acts_for_merchant("m-1") and not principal.acts_for_merchant("m-2")


async def test_a_guest_token_reaches_its_one_order() -> None:
    token = TokenIssuer(settings()).access_token(Principal("guest-1", Role.GUEST, order_id="o-1"))
    assert (await TokenVerifier(settings()).verify(token)).order_id == "o-1"


async def test_an_expired_token_is_refused() -> None:
    past = datetime(2020, 1, 1, tzinfo=UTC)
    token = TokenIssuer(settings(), clock=lambda: past).access_token(Principal("c-1", Role.CUSTOMER))
    with pytest.raises(InvalidToken, match="expired"):
        await TokenVerifier(settings()).verify(token)


async def test_a_token_signed_with_another_key_is_refused() -> None:
    other = settings(auth_signing_key="another-signing-key-0123456789abcdef01234567")
    token = TokenIssuer(other).access_token(Principal("c-1", Role.ADMIN))
    with pytest.raises(InvalidToken, match="invalid"):
        await TokenVerifier(settings()).verify(token)


async def test_a_token_for_another_audience_is_refused() -> None:
    token = TokenIssuer(settings(auth_audience="elsewhere")).access_token(Principal("c-1", Role.ADMIN))
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings()).verify(token)


async def test_a_refresh_token_is_not_an_access_token_and_back() -> None:
    issuer, verifier = TokenIssuer(settings()), TokenVerifier(settings())
    with pytest.raises(InvalidToken, match="not 'access'"):
        await verifier.verify(issuer.refresh_token("c-1"))
    with pytest.raises(InvalidToken, match="not 'refresh'"):
        await verifier.verify(issuer.access_token(Principal("c-1", Role.CUSTOMER)), use=TokenUse.REFRESH)
    assert (await verifier.verify(issuer.refresh_token("c-1"), use=TokenUse.REFRESH)).subject == "c-1"


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "superuser"},
        {"role": "merchant"},  # no merchant id
        {"role": "guest"},  # no order id
        {},
    ],
)
async def test_a_token_without_a_usable_role_is_refused(claims: dict[str, Any]) -> None:
    now = datetime.now(UTC)
    token = jwt.encode(
        {
            **claims,
            "sub": "x",
            "iss": "order-platform",
            "aud": "order-platform",
            "iat": now,
            "exp": now + timedelta(minutes=5),
            "token_use": "access",
        },
        settings().auth_signing_key.get_secret_value(),
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings()).verify(token)


async def test_garbage_and_unknown_issuers_are_refused() -> None:
    verifier = TokenVerifier(settings())
    with pytest.raises(InvalidToken, match="not a JWT"):
        await verifier.verify("not-a-token")
    stranger = jwt.encode({"iss": "https://evil.example/", "sub": "x"}, "k" * 32, algorithm="HS256")
    with pytest.raises(InvalidToken, match="does not trust"):
        await verifier.verify(stranger)


class Provider:
    """An OpenID Connect provider's signing key and the JWKS document it publishes."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**public, "kid": "key-1", "use": "sig", "alg": "RS256"}]}

    def token(self, **claims: Any) -> str:
        now = datetime.now(UTC)
        payload = {
            "iss": OIDC["auth_oidc_issuer"],
            "aud": OIDC["auth_oidc_audience"],
            "sub": "user-42",
            "iat": now,
            "exp": now + timedelta(minutes=5),
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": "key-1"})


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Provider:
    provider = Provider()
    # The JWKS is what the provider would serve at its URL; nothing else of PyJWKClient is replaced.
    monkeypatch.setattr(jwt.PyJWKClient, "fetch_data", lambda _self: provider.jwks)
    return provider


async def test_an_oidc_token_verifies_with_the_providers_jwks_and_mapped_claims(provider: Provider) -> None:
    verifier = TokenVerifier(settings(**OIDC))

    principal = await verifier.verify(provider.token(roles=["shopper", "merchant"], shop_id="m-7"))

    assert principal == Principal("user-42", Role.MERCHANT, merchant_id="m-7")


async def test_an_oidc_token_signed_by_another_key_is_refused(provider: Provider) -> None:
    impostor = Provider()
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings(**OIDC)).verify(impostor.token(roles=["admin"]))
    assert provider.jwks  # the trusted provider's keys were the ones consulted


async def test_an_oidc_token_is_never_a_refresh_token(provider: Provider) -> None:
    with pytest.raises(InvalidToken, match="refresh"):
        await TokenVerifier(settings(**OIDC)).verify(provider.token(roles=["customer"]), use=TokenUse.REFRESH)


def test_an_oidc_issuer_needs_its_jwks_url() -> None:
    with pytest.raises(ValueError, match="go together"):
        SharedSettings(auth_oidc_issuer="https://id.example.com/")
