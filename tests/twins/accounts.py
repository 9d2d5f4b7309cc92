"""The account store's in-memory twin: services.order.accounts.store.AccountStore in dicts.

tests/contract/test_account_store.py runs the same suite against this and the Mongo store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.order.accounts.domain import (
    MAX_ADDRESSES,
    Account,
    AddressBookFull,
    Login,
    LoginTaken,
    SavedAddress,
)
from shared.contracts import ShippingAddress


@dataclass
class InMemoryAccountStore:
    """Keeps the Mongo store's guarantees: one account per login, at most MAX_ADDRESSES each."""

    accounts: dict[str, Account] = field(default_factory=dict)
    by_login_value: dict[str, str] = field(default_factory=dict)  # normalised login -> customer id
    saved: dict[str, SavedAddress] = field(default_factory=dict)  # by address id

    async def create(self, account: Account) -> None:
        if account.login.value in self.by_login_value:
            raise LoginTaken("an account with this login exists already")
        self.accounts[account.customer_id] = account
        self.by_login_value[account.login.value] = account.customer_id

    async def get(self, customer_id: str) -> Account | None:
        return self.accounts.get(customer_id)

    async def by_login(self, login: Login) -> Account | None:
        customer_id = self.by_login_value.get(login.value)
        return None if customer_id is None else self.accounts[customer_id]

    async def set_password_hash(self, customer_id: str, password_hash: str) -> None:
        account = self.accounts.get(customer_id)
        if account is not None:
            self.accounts[customer_id] = replace(account, password_hash=password_hash)

    async def add_address(self, saved: SavedAddress) -> None:
        if len(await self.addresses(saved.customer_id)) >= MAX_ADDRESSES:
            raise AddressBookFull(f"an address book holds at most {MAX_ADDRESSES} addresses")
        self.saved[saved.address_id] = saved

    async def addresses(self, customer_id: str) -> list[SavedAddress]:
        mine = [s for s in self.saved.values() if s.customer_id == customer_id]
        return sorted(mine, key=lambda s: (s.created_at, s.address_id))

    async def saved_address(self, customer_id: str, address_id: str) -> SavedAddress | None:
        found = self.saved.get(address_id)
        return found if found is not None and found.customer_id == customer_id else None

    async def address(self, customer_id: str, address_id: str) -> ShippingAddress | None:
        found = await self.saved_address(customer_id, address_id)
        return None if found is None else found.address

    async def remove_address(self, customer_id: str, address_id: str) -> bool:
        if await self.saved_address(customer_id, address_id) is None:
            return False
        del self.saved[address_id]
        return True
