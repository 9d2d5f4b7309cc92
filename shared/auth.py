"""Who is calling: bearer JWTs verified with PyJWT, the roles they carry, and the FastAPI
dependencies every service's routes declare.

Tokens come from one of two issuers, told apart by their `iss` claim:
- the platform itself (HS256 with `AUTH_SIGNING_KEY`): customer accounts, guest checkout, `shopctl`;
- an operator's OpenID Connect provider (`AUTH_OIDC_ISSUER` + `AUTH_OIDC_JWKS_URL`), whose keys are
  fetched from its JWKS and cached, and whose role and merchant claims are named in the settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.clock import Clock, utc_now
from shared.http import Problem
from shared.settings import SharedSettings

LOCAL_ALGORITHM = "HS256"
OIDC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


class Role(StrEnum):
    CUSTOMER = "customer"
    MERCHANT = "merchant"
    ADMIN = "admin"
    # Reads the event streams and analytics, nothing else.
    ANALYST = "analyst"
    # A guest checkout's token: it reaches one order and nothing else.
    GUEST = "guest"


class TokenUse(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    subject: str
    role: Role
    merchant_id: str | None = None
    order_id: str | None = None  # a guest token's one order

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def acts_for_merchant(self, merchant_id: str) -> bool:
        """May write as `merchant_id`: the merchant itself, or an admin."""
        return self.is_admin or (self.role is Role.MERCHANT and self.merchant_id == merchant_id)


class InvalidToken(ValueError):
    """A bearer token that is malformed, expired, of the wrong use or from an unknown issuer."""


class TokenIssuer:
    """Signs the platform's own tokens with the local key."""

    def __init__(self, settings: SharedSettings, clock: Clock = utc_now) -> None:
        self._key = settings.auth_signing_key.get_secret_value()
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._clock = clock
        self.access_ttl = timedelta(seconds=settings.auth_access_token_ttl_s)
        self.refresh_ttl = timedelta(seconds=settings.auth_refresh_token_ttl_s)

    def access_token(self, principal: Principal, ttl: timedelta | None = None) -> str:
        claims: dict[str, Any] = {"role": principal.role.value}
        if principal.merchant_id is not None:
            claims["merchant_id"] = principal.merchant_id
        if principal.order_id is not None:
            claims["order_id"] = principal.order_id
        return self._sign(principal.subject, TokenUse.ACCESS, ttl or self.access_ttl, claims)

    def refresh_token(self, subject: str) -> str:
        return self._sign(subject, TokenUse.REFRESH, self.refresh_ttl, {"role": Role.CUSTOMER.value})

    def _sign(self, subject: str, use: TokenUse, ttl: timedelta, claims: dict[str, Any]) -> str:
        now = self._clock()
        payload = {
            **claims,
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + ttl,
            "token_use": use.value,
        }
        return jwt.encode(payload, self._key, algorithm=LOCAL_ALGORITHM)


class TokenVerifier:
    """Verifies a bearer token from the local issuer or the configured OpenID Connect provider."""

    def __init__(self, settings: SharedSettings) -> None:
        self._local_key = settings.auth_signing_key.get_secret_value()
        self._local_issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._oidc_issuer = settings.auth_oidc_issuer
        self._oidc_audience = settings.auth_oidc_audience or settings.auth_audience
        self._role_claim = settings.auth_oidc_role_claim
        self._merchant_claim = settings.auth_oidc_merchant_claim
        self._jwks = (
            jwt.PyJWKClient(settings.auth_oidc_jwks_url, cache_keys=True, lifespan=3600, timeout=5)
            if settings.auth_oidc_jwks_url
            else None
        )

    async def verify(self, token: str, use: TokenUse = TokenUse.ACCESS) -> Principal:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise InvalidToken("the bearer token is not a JWT") from None
        if issuer == self._local_issuer:
            return self._local(token, use)
        if self._jwks is not None and issuer == self._oidc_issuer:
            if use is not TokenUse.ACCESS:
                raise InvalidToken("only the platform's own refresh tokens are accepted here")
            return await self._oidc(token)
        raise InvalidToken("the bearer token comes from an issuer this platform does not trust")

    def _local(self, token: str, use: TokenUse) -> Principal:
        claims = _decode(
            token, self._local_key, [LOCAL_ALGORITHM], audience=self._audience, issuer=self._local_issuer
        )
        if claims.get("token_use") != use.value:
            raise InvalidToken(f"this token's use is {claims.get('token_use')!r}, not {use.value!r}")
        return _principal(claims, role_claim="role", merchant_claim="merchant_id")

    async def _oidc(self, token: str) -> Principal:
        if self._jwks is None or self._oidc_issuer is None:
            raise InvalidToken("no OpenID Connect provider is configured")
        try:
            # PyJWKClient fetches with urllib (blocking) the first time and when keys rotate.
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWTError as error:
            raise InvalidToken(f"the token's signing key is unknown to the issuer's JWKS ({error})") from None
        claims = _decode(
            token, signing_key.key, OIDC_ALGORITHMS, audience=self._oidc_audience, issuer=self._oidc_issuer
        )
        return _principal(claims, role_claim=self._role_claim, merchant_claim=self._merchant_claim)


def _decode(token: str, key: Any, algorithms: list[str], *, audience: str, issuer: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "sub"]},
            leeway=30,
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the bearer token has expired") from None
    except jwt.PyJWTError as error:
        raise InvalidToken(f"the bearer token is invalid: {error}") from None
    return claims


def _principal(claims: dict[str, Any], *, role_claim: str, merchant_claim: str) -> Principal:
    raw_role = claims.get(role_claim)
    if isinstance(raw_role, list):  # many providers carry roles as a list
        raw_role = next(
            (r for r in (Role.ADMIN, Role.ANALYST, Role.MERCHANT, Role.CUSTOMER) if r.value in raw_role), None
        )
    try:
        role = Role(str(raw_role))
    except ValueError:
        raise InvalidToken(f"the token carries no known role in its {role_claim!r} claim") from None
    merchant_id = claims.get(merchant_claim)
    order_id = claims.get("order_id")
    if role is Role.MERCHANT and not isinstance(merchant_id, str):
        raise InvalidToken(f"a merchant token must name its merchant in {merchant_claim!r}")
    if role is Role.GUEST and not isinstance(order_id, str):
        raise InvalidToken("a guest token must name its order")
    return Principal(
        subject=str(claims["sub"]),
        role=role,
        merchant_id=merchant_id if role is Role.MERCHANT else None,
        order_id=order_id if role is Role.GUEST else None,
    )


# --- FastAPI dependencies ----------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    description="A platform token (`shopctl token`, `POST /v1/auth/token`, guest checkout) "
    "or one from the operator's OpenID Connect provider.",
)


def unauthenticated(detail: str) -> Problem:
    """The 401 every route answers when the caller is not who it must be."""
    return Problem(
        401, "Unauthenticated", detail, code="unauthenticated", headers={"WWW-Authenticate": "Bearer"}
    )


async def optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller when a bearer token came (401 when it does not verify), None without one."""
    if credentials is None:
        return None
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return await verifier.verify(credentials.credentials)
    except InvalidToken as error:
        raise unauthenticated(str(error)) from None


async def required_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if principal is None:
        raise unauthenticated("this request needs an `Authorization: Bearer <token>` header")
    return principal


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through only callers with one of `roles`."""
    allowed = frozenset(roles)
    names = ", ".join(sorted(role.value for role in allowed))

    async def dependency(principal: Annotated[Principal, Depends(required_principal)]) -> Principal:
        if principal.role not in allowed:
            raise Problem(403, "Forbidden", f"this request needs the role {names}", code="forbidden")
        return principal

    return dependency


MaybeCaller = Annotated[Principal | None, Depends(optional_principal)]
Caller = Annotated[Principal, Depends(required_principal)]
AdminCaller = Annotated[Principal, Depends(require_role(Role.ADMIN))]
