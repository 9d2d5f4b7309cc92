"""Where accounts and saved addresses live: the store protocols and their MongoDB implementation.
The in-memory twin for tests is tests/twins/accounts.py.

Personal data is sealed (shared.crypto.PersonalData): the login is found by its blind index, and
an address is one sealed JSON document, so the database holds no phone, e-mail or address in clear.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.order.accounts.domain import (
    MAX_ADDRESSES,
    Account,
    AddressBookFull,
    CompleteAddress,
    Login,
    LoginKind,
    LoginTaken,
    SavedAddress,
)
from shared.contracts import ShippingAddress
from shared.crypto import PersonalData
from shared.mongo import Document, MongoStore

ACCOUNTS = "accounts"
ADDRESSES = "addresses"


class AddressBook(Protocol):
    """What the order service needs of the address book to ship to a saved address."""

    async def address(self, customer_id: str, address_id: str) -> ShippingAddress | None:
        """The customer's saved address `address_id`; None when unknown or someone else's."""
        ...


class AccountStore(AddressBook, Protocol):
    async def create(self, account: Account) -> None:
        """Store a new account; raises LoginTaken when an account has this login already."""
        ...

    async def get(self, customer_id: str) -> Account | None: ...

    async def by_login(self, login: Login) -> Account | None: ...

    async def set_password_hash(self, customer_id: str, password_hash: str) -> None: ...

    async def add_address(self, saved: SavedAddress) -> None:
        """Save an address; raises AddressBookFull when the customer has MAX_ADDRESSES already,
        even when several are added at once."""
        ...

    async def addresses(self, customer_id: str) -> list[SavedAddress]:
        """The customer's saved addresses, oldest first."""
        ...

    async def saved_address(self, customer_id: str, address_id: str) -> SavedAddress | None:
        """The customer's saved address with its label; None when unknown or someone else's."""
        ...

    async def remove_address(self, customer_id: str, address_id: str) -> bool:
        """Remove the customer's address; False when there is no such address of theirs."""
        ...


class MongoAccountStore:
    """Accounts in the order service's database. No events come from here, so plain single-document
    writes suffice: the unique indexes make registering a login and taking an address slot atomic."""

    def __init__(self, store: MongoStore, personal_data: PersonalData) -> None:
        self._accounts = store.db[ACCOUNTS]
        self._addresses = store.db[ADDRESSES]
        self._sealed = personal_data

    async def ensure_indexes(self) -> None:
        await self._accounts.create_index([("login_index", ASCENDING)], unique=True)
        # At most MAX_ADDRESSES per customer, held by the index rather than a read-then-write check:
        # each address takes a numbered slot, and two concurrent adds cannot take the same one.
        await self._addresses.create_index([("customer_id", ASCENDING), ("slot", ASCENDING)], unique=True)

    async def create(self, account: Account) -> None:
        try:
            await self._accounts.insert_one(self._account_to_doc(account))
        except DuplicateKeyError:
            # The only other unique key is the random customer id.
            raise LoginTaken("an account with this login exists already") from None

    async def get(self, customer_id: str) -> Account | None:
        doc = await self._accounts.find_one({"_id": customer_id})
        return None if doc is None else self._account_from_doc(doc)

    async def by_login(self, login: Login) -> Account | None:
        doc = await self._accounts.find_one({"login_index": self._sealed.blind_index(login.value)})
        return None if doc is None else self._account_from_doc(doc)

    async def set_password_hash(self, customer_id: str, password_hash: str) -> None:
        await self._accounts.update_one({"_id": customer_id}, {"$set": {"password_hash": password_hash}})

    async def add_address(self, saved: SavedAddress) -> None:
        # A concurrent add may take the slot this one picked; then look again. Each pass either
        # stores the address or sees one more slot taken, so MAX_ADDRESSES + 1 passes settle it.
        for _ in range(MAX_ADDRESSES + 1):
            taken = {
                doc["slot"]
                async for doc in self._addresses.find({"customer_id": saved.customer_id}, {"slot": 1})
            }
            free = next((slot for slot in range(MAX_ADDRESSES) if slot not in taken), None)
            if free is None:
                raise AddressBookFull(f"an address book holds at most {MAX_ADDRESSES} addresses")
            try:
                await self._addresses.insert_one(self._address_to_doc(saved, free))
                return
            except DuplicateKeyError:
                continue  # the slot went to a concurrent add (the address id is random)
        raise AddressBookFull(f"an address book holds at most {MAX_ADDRESSES} addresses")

    async def addresses(self, customer_id: str) -> list[SavedAddress]:
        docs = await self._addresses.find({"customer_id": customer_id}).to_list()
        saved = [self._address_from_doc(doc) for doc in docs]
        return sorted(saved, key=lambda s: (s.created_at, s.address_id))

    async def saved_address(self, customer_id: str, address_id: str) -> SavedAddress | None:
        doc = await self._addresses.find_one({"_id": address_id, "customer_id": customer_id})
        return None if doc is None else self._address_from_doc(doc)

    async def address(self, customer_id: str, address_id: str) -> ShippingAddress | None:
        saved = await self.saved_address(customer_id, address_id)
        return None if saved is None else saved.address

    async def remove_address(self, customer_id: str, address_id: str) -> bool:
        result = await self._addresses.delete_one({"_id": address_id, "customer_id": customer_id})
        return result.deleted_count == 1

    # --- document mapping --------------------------------------------------------------------

    def _account_to_doc(self, account: Account) -> Document:
        return {
            "_id": account.customer_id,
            "login_index": self._sealed.blind_index(account.login.value),
            "login_kind": account.login.kind.value,
            "login_sealed": self._sealed.seal(account.login.value),
            "password_hash": account.password_hash,
            "created_at": account.created_at,
        }

    def _account_from_doc(self, doc: Mapping[str, Any]) -> Account:
        return Account(
            customer_id=doc["_id"],
            login=Login(LoginKind(doc["login_kind"]), self._sealed.open(doc["login_sealed"])),
            password_hash=doc["password_hash"],
            created_at=doc["created_at"],
        )

    def _address_to_doc(self, saved: SavedAddress, slot: int) -> Document:
        # The label is sealed with the address: customers write names and places into it.
        sealed = json.dumps({"address": saved.address.model_dump(mode="json"), "label": saved.label})
        return {
            "_id": saved.address_id,
            "customer_id": saved.customer_id,
            "slot": slot,
            "sealed": self._sealed.seal(sealed),
            "created_at": saved.created_at,
        }

    def _address_from_doc(self, doc: Mapping[str, Any]) -> SavedAddress:
        opened = json.loads(self._sealed.open(doc["sealed"]))
        return SavedAddress(
            address_id=doc["_id"],
            customer_id=doc["customer_id"],
            address=CompleteAddress.model_validate(opened["address"]),
            label=opened["label"],
            created_at=doc["created_at"],
        )
