"""Customer accounts over HTTP: register, sign in (OAuth2 password and refresh grants), the saved
address book. Routes map the account rules' errors to problem+json."""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from fastapi import APIRouter, Depends, Form, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from services.order.accounts.domain import (
    ADDRESS_EXAMPLE,
    EMAIL_MAX_CHARS,
    LABEL_MAX_CHARS,
    MAX_ADDRESSES,
    PASSWORD_MAX_CHARS,
    PASSWORD_MIN_CHARS,
    Account,
    AddressBookFull,
    CompleteAddress,
    Login,
    LoginKind,
    LoginTaken,
    SavedAddress,
    check_password,
    new_address_id,
    new_customer_id,
    parse_login,
)
from services.order.accounts.store import AccountStore
from shared.auth import InvalidToken, Principal, Role, TokenIssuer, TokenUse, TokenVerifier, require_role
from shared.clock import Clock, utc_now
from shared.contracts import ShippingAddress
from shared.http import Problem, problem_responses
from shared.logging import get_logger

log = get_logger(__name__)

CustomerCaller = Annotated[Principal, Depends(require_role(Role.CUSTOMER))]
AddressId = Annotated[str, Path(max_length=64, examples=["addr-3f2a9c1e8b7d4c6a9e0f1a2b3c4d5e6f"])]
# Any longer password is wrong anyway; the bound keeps a huge one from reaching argon2.
SUBMITTED_PASSWORD_MAX_CHARS = 1024


class Passwords:
    """argon2id through argon2-cffi, off the event loop and a few at a time: each hash costs tens of
    milliseconds of CPU and 64 MiB, so a burst of sign-ins must not fill the loop's thread pool."""

    def __init__(self, hasher: PasswordHasher | None = None, *, concurrency: int | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency or min(4, os.cpu_count() or 1))
        # An unknown login is checked against this hash, so that it takes as long as a wrong password
        # and the answer's timing does not tell which logins have accounts.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(32))

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches `password_hash`; None (no such account) never matches."""
        async with self._slots:
            try:
                await asyncio.to_thread(self._hasher.verify, password_hash or self._decoy, password)
            except VerifyMismatchError:
                return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """The hash was made with other parameters than the current ones (they were raised since)."""
        return self._hasher.check_needs_rehash(password_hash)


# --- request and response models ---------------------------------------------------------------


def _login_field(text: str) -> str:
    try:
        return parse_login(text).value
    except ValueError as error:
        raise PydanticCustomError("login", str(error)) from None


def _password_field(text: str) -> str:
    try:
        return check_password(text)
    except ValueError as error:
        raise PydanticCustomError("password", str(error)) from None


class RegisterIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"login": "+86 138 0013 8000", "password": "correct horse battery"},
                {"login": "li.lei@example.com", "password": "correct horse battery"},
            ]
        },
    )

    login: Annotated[
        str,
        Field(
            max_length=EMAIL_MAX_CHARS,
            description="A mainland China mobile number (+86 optional) or an e-mail address; "
            "stored normalised (11 digits, or the e-mail in lower case).",
        ),
        AfterValidator(_login_field),
    ]
    password: Annotated[
        str,
        Field(
            description=f"{PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters, kept exactly as typed.",
            json_schema_extra={"minLength": PASSWORD_MIN_CHARS, "maxLength": PASSWORD_MAX_CHARS},
        ),
        AfterValidator(_password_field),
    ]


class AccountOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-0b9f6c1e2d3a4b5c8d7e6f5a4b3c2d1e",
                    "login": "13800138000",
                    "login_kind": "phone",
                    "created_at": "2026-11-25T12:00:00Z",
                }
            ]
        }
    )

    customer_id: str
    login: str = Field(description="The login as stored: 11 digits, or the e-mail in lower case.")
    login_kind: LoginKind
    created_at: datetime


class TokenForm(BaseModel):
    """An OAuth2 token request (RFC 6749 sections 4.3 and 6), form-encoded as OAuth2 clients send it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"grant_type": "password", "username": "13800138000", "password": "correct horse battery"},
                {"grant_type": "refresh_token", "refresh_token": "eyJhbGciOiJIUzI1NiIs..."},
            ]
        }
    )

    grant_type: Literal["password", "refresh_token"]
    username: str | None = Field(
        default=None, max_length=EMAIL_MAX_CHARS, description="The login (password grant)."
    )
    password: str | None = Field(
        default=None, max_length=SUBMITTED_PASSWORD_MAX_CHARS, description="The password (password grant)."
    )
    refresh_token: str | None = Field(
        default=None, max_length=4096, description="A refresh token from an earlier answer (refresh grant)."
    )
    scope: str = Field(default="", max_length=256, description="Ignored: a token carries the customer role.")


class TokenOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIs...",
                    "token_type": "bearer",
                    "expires_in": 3600,
                    "refresh_token": "eyJhbGciOiJIUzI1NiIs...",
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str = Field(
        description="Trade it at this endpoint (grant_type=refresh_token) for new tokens."
    )


class AddressIn(CompleteAddress):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"label": "家", **ADDRESS_EXAMPLE}]},
    )

    label: str | None = Field(
        default=None, min_length=1, max_length=LABEL_MAX_CHARS, description="The customer's name for it."
    )

    def address(self) -> CompleteAddress:
        return CompleteAddress.model_validate(self.model_dump(exclude={"label"}))


_SAVED_ADDRESS_EXAMPLE: dict[str, Any] = {
    "address_id": "addr-3f2a9c1e8b7d4c6a9e0f1a2b3c4d5e6f",
    "label": "家",
    "created_at": "2026-11-25T12:00:00Z",
    **ADDRESS_EXAMPLE,
}


class SavedAddressOut(ShippingAddress):
    model_config = ConfigDict(json_schema_extra={"examples": [_SAVED_ADDRESS_EXAMPLE]})

    address_id: str = Field(description="Name it in an order's `address_id` to ship there.")
    label: str | None
    created_at: datetime


class AddressList(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [_SAVED_ADDRESS_EXAMPLE]}]})

    items: list[SavedAddressOut] = Field(description=f"Oldest first; at most {MAX_ADDRESSES}.")


def account_out(account: Account) -> AccountOut:
    return AccountOut(
        customer_id=account.customer_id,
        login=account.login.value,
        login_kind=account.login.kind,
        created_at=account.created_at,
    )


def saved_address_out(saved: SavedAddress) -> SavedAddressOut:
    return SavedAddressOut(
        **saved.address.model_dump(),
        address_id=saved.address_id,
        label=saved.label,
        created_at=saved.created_at,
    )


def _invalid_grant(detail: str) -> Problem:
    # `error` is OAuth2's own field (RFC 6749 section 5.2), so that OAuth2 client libraries read it.
    return Problem(
        401,
        "Invalid grant",
        detail,
        code="invalid-grant",
        headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"},
        error="invalid_grant",
    )


def _missing_form_fields(grant_type: str, missing: dict[str, str | None]) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "type": "missing",
                "loc": ("body", name),
                "msg": f"grant_type={grant_type} needs {name}",
                "input": None,
            }
            for name, value in missing.items()
            if not value
        ]
    )


def _login_or_none(text: str) -> Login | None:
    try:
        return parse_login(text)
    except ValueError:
        return None


# --- routes -------------------------------------------------------------------------------------


def build_router(
    accounts: AccountStore,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    *,
    passwords: Passwords | None = None,
    clock: Clock = utc_now,
) -> APIRouter:
    """The account routes. `verifier` checks refresh tokens; the address book's bearer tokens are
    checked by the app's verifier (create_app's `token_verifier`)."""
    router = APIRouter(prefix="/v1", tags=["accounts"])
    hashing = passwords or Passwords()

    def tokens(customer_id: str, response: Response) -> TokenOut:
        # RFC 6749 section 5.1: an answer carrying tokens must not be cached.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return TokenOut(
            access_token=issuer.access_token(Principal(customer_id, Role.CUSTOMER)),
            expires_in=int(issuer.access_ttl.total_seconds()),
            refresh_token=issuer.refresh_token(customer_id),
        )

    async def password_grant(form: TokenForm, response: Response) -> TokenOut:
        if not form.username or not form.password:
            raise _missing_form_fields(
                form.grant_type, {"username": form.username, "password": form.password}
            )
        login = _login_or_none(form.username)
        account = None if login is None else await accounts.by_login(login)
        matches = await hashing.verify(None if account is None else account.password_hash, form.password)
        if account is None or not matches:
            if account is not None:
                log.info("sign_in_refused", customer_id=account.customer_id, reason="wrong password")
            raise _invalid_grant("the login or the password is wrong")
        if hashing.needs_rehash(account.password_hash):
            await accounts.set_password_hash(account.customer_id, await hashing.hash(form.password))
            log.info("password_rehashed", customer_id=account.customer_id)
        log.info("signed_in", customer_id=account.customer_id)
        return tokens(account.customer_id, response)

    async def refresh_grant(form: TokenForm, response: Response) -> TokenOut:
        if not form.refresh_token:
            raise _missing_form_fields(form.grant_type, {"refresh_token": form.refresh_token})
        try:
            principal = await verifier.verify(form.refresh_token, use=TokenUse.REFRESH)
        except InvalidToken as error:
            raise _invalid_grant(f"the refresh token does not verify ({error}); sign in again") from None
        if principal.role is not Role.CUSTOMER or await accounts.get(principal.subject) is None:
            raise _invalid_grant("the refresh token's account no longer exists; sign in again")
        return tokens(principal.subject, response)

    @router.post(
        "/auth/register",
        status_code=status.HTTP_201_CREATED,
        response_model=AccountOut,
        responses=problem_responses(409, 422),
    )
    async def register(body: RegisterIn) -> AccountOut:
        """Open a customer account with a phone number or an e-mail address and a password; then
        sign in with `POST /v1/auth/token`."""
        login = parse_login(body.login)
        account = Account(
            customer_id=new_customer_id(),
            login=login,
            password_hash=await hashing.hash(body.password),
            created_at=clock(),
        )
        try:
            await accounts.create(account)
        except LoginTaken:
            what = "phone number" if login.kind is LoginKind.PHONE else "e-mail address"
            raise Problem(
                409,
                "Login taken",
                f"an account with this {what} exists already; sign in with POST /v1/auth/token",
                code="login-taken",
            ) from None
        log.info("account_registered", customer_id=account.customer_id, login_kind=login.kind.value)
        return account_out(account)

    @router.post("/auth/token", response_model=TokenOut, responses=problem_responses(401, 422))
    async def token(form: Annotated[TokenForm, Form()], response: Response) -> TokenOut:
        """OAuth2 token endpoint: `grant_type=password` with `username` (the login) and `password`,
        or `grant_type=refresh_token` with `refresh_token`; answers a bearer access token and a new
        refresh token. A wrong login and a wrong password get the same 401."""
        if form.grant_type == "password":
            return await password_grant(form, response)
        return await refresh_grant(form, response)

    @router.get("/me", response_model=AccountOut, responses=problem_responses(401, 403, 404))
    async def me(caller: CustomerCaller) -> AccountOut:
        """The signed-in customer's account."""
        account = await accounts.get(caller.subject)
        if account is None:
            raise Problem(
                404,
                "Account not found",
                "this token's customer has no account here",
                code="account-not-found",
            )
        return account_out(account)

    @router.get("/me/addresses", response_model=AddressList, responses=problem_responses(401, 403))
    async def list_addresses(caller: CustomerCaller) -> AddressList:
        """The customer's saved addresses, oldest first."""
        saved = await accounts.addresses(caller.subject)
        return AddressList(items=[saved_address_out(s) for s in saved])

    @router.post(
        "/me/addresses",
        status_code=status.HTTP_201_CREATED,
        response_model=SavedAddressOut,
        responses=problem_responses(401, 403, 409, 422),
    )
    async def add_address(
        body: AddressIn, caller: CustomerCaller, request: Request, response: Response
    ) -> SavedAddressOut:
        """Save an address (at most 20); an order may then name its `address_id` instead of
        repeating the shipping details."""
        saved = SavedAddress(
            address_id=new_address_id(),
            customer_id=caller.subject,
            address=body.address(),
            label=body.label,
            created_at=clock(),
        )
        try:
            await accounts.add_address(saved)
        except AddressBookFull:
            raise Problem(
                409,
                "Address book full",
                f"an address book holds at most {MAX_ADDRESSES} addresses; delete one first",
                code="address-book-full",
            ) from None
        response.headers["Location"] = str(request.url_for("get_address", address_id=saved.address_id))
        return saved_address_out(saved)

    @router.get(
        "/me/addresses/{address_id}",
        response_model=SavedAddressOut,
        name="get_address",
        responses=problem_responses(401, 403, 404),
    )
    async def get_address(address_id: AddressId, caller: CustomerCaller) -> SavedAddressOut:
        """One saved address."""
        found = await accounts.saved_address(caller.subject, address_id)
        if found is None:
            raise _address_not_found(address_id)
        return saved_address_out(found)

    @router.delete(
        "/me/addresses/{address_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        responses=problem_responses(401, 403, 404),
    )
    async def delete_address(address_id: AddressId, caller: CustomerCaller) -> Response:
        """Delete a saved address; orders already placed keep the copy they shipped to."""
        if not await accounts.remove_address(caller.subject, address_id):
            raise _address_not_found(address_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


def _address_not_found(address_id: str) -> Problem:
    return Problem(
        404, "Address not found", f"you have no saved address {address_id}", code="address-not-found"
    )
