"""The account store's contract, run against the in-memory twin and MongoDB, so the twin cannot drift."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

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
from services.order.accounts.store import ACCOUNTS, ADDRESSES, AccountStore, MongoAccountStore
from shared.crypto import PersonalData
from shared.mongo import MongoStore
from shared.settings import SharedSettings
from tests.twins.accounts import InMemoryAccountStore

# Whole seconds: MongoDB keeps datetimes to the millisecond.
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PHONE = Login(LoginKind.PHONE, "13800138000")
EMAIL = Login(LoginKind.EMAIL, "li.lei@example.com")
HOME = CompleteAddress(
    name="李雷",
    phone="13800138000",
    province="浙江省",
    city="杭州市",
    district="西湖区",
    line1="龙井路 1 号",
    postal_code="310000",
)
_ids = itertools.count(1)


def account(
    customer_id: str = "cust-1", login: Login = PHONE, password_hash: str = "$argon2id$h1"
) -> Account:
    return Account(customer_id=customer_id, login=login, password_hash=password_hash, created_at=T0)


def saved(
    customer_id: str = "cust-1",
    *,
    address_id: str | None = None,
    label: str | None = "家",
    after: timedelta = timedelta(0),
) -> SavedAddress:
    return SavedAddress(
        address_id=address_id or f"addr-{next(_ids)}",
        customer_id=customer_id,
        address=HOME,
        label=label,
        created_at=T0 + after,
    )


class AccountStoreContract:
    """Subclasses provide the `store` fixture: an empty AccountStore."""

    async def test_an_account_is_found_by_id_and_by_login(self, store: AccountStore) -> None:
        await store.create(account("cust-1", PHONE))
        await store.create(account("cust-2", EMAIL))

        assert await store.get("cust-1") == account("cust-1", PHONE)
        assert await store.by_login(EMAIL) == account("cust-2", EMAIL)
        assert await store.get("cust-9") is None
        assert await store.by_login(Login(LoginKind.PHONE, "13900139000")) is None

    async def test_a_second_account_with_the_same_login_is_refused_and_the_first_stays(
        self, store: AccountStore
    ) -> None:
        await store.create(account("cust-1", EMAIL, "$argon2id$first"))

        with pytest.raises(LoginTaken):
            await store.create(account("cust-2", EMAIL, "$argon2id$second"))

        assert await store.by_login(EMAIL) == account("cust-1", EMAIL, "$argon2id$first")
        assert await store.get("cust-2") is None

    async def test_a_new_password_hash_replaces_the_old_one(self, store: AccountStore) -> None:
        await store.create(account("cust-1", PHONE, "$argon2id$old"))

        await store.set_password_hash("cust-1", "$argon2id$new")

        found = await store.by_login(PHONE)
        assert found is not None and found.password_hash == "$argon2id$new"

    async def test_saved_addresses_list_oldest_first_with_their_labels(self, store: AccountStore) -> None:
        later = saved(label=None, after=timedelta(minutes=5))
        earlier = saved(label="公司")
        await store.add_address(later)
        await store.add_address(earlier)
        await store.add_address(saved("cust-2"))

        assert await store.addresses("cust-1") == [earlier, later]
        assert await store.saved_address("cust-1", later.address_id) == later

    async def test_the_address_book_gives_the_order_service_the_complete_address(
        self, store: AccountStore
    ) -> None:
        home = saved(address_id="addr-home")
        await store.add_address(home)

        found = await store.address("cust-1", "addr-home")

        assert found == HOME
        assert isinstance(found, CompleteAddress)
        assert await store.address("cust-1", "addr-unknown") is None

    async def test_another_customers_address_is_neither_found_nor_removed(self, store: AccountStore) -> None:
        theirs = saved("cust-2", address_id="addr-theirs")
        await store.add_address(theirs)

        assert await store.address("cust-1", "addr-theirs") is None
        assert await store.saved_address("cust-1", "addr-theirs") is None
        assert await store.remove_address("cust-1", "addr-theirs") is False
        assert await store.addresses("cust-2") == [theirs]

    async def test_a_removed_address_is_gone(self, store: AccountStore) -> None:
        kept, removed = saved(), saved(after=timedelta(seconds=1))
        await store.add_address(kept)
        await store.add_address(removed)

        assert await store.remove_address("cust-1", removed.address_id) is True

        assert await store.addresses("cust-1") == [kept]
        assert await store.address("cust-1", removed.address_id) is None
        assert await store.remove_address("cust-1", removed.address_id) is False

    async def test_an_address_book_holds_at_most_twenty_and_a_removal_makes_room(
        self, store: AccountStore
    ) -> None:
        book = [saved(after=timedelta(seconds=i)) for i in range(MAX_ADDRESSES)]
        for entry in book:
            await store.add_address(entry)

        with pytest.raises(AddressBookFull):
            await store.add_address(saved())
        await store.add_address(saved("cust-2"))  # another customer's book is not full

        await store.remove_address("cust-1", book[0].address_id)
        replacement = saved(after=timedelta(hours=1))
        await store.add_address(replacement)
        assert await store.addresses("cust-1") == [*book[1:], replacement]

    async def test_concurrent_adds_never_exceed_the_limit(self, store: AccountStore) -> None:
        attempts = [saved(after=timedelta(seconds=i)) for i in range(MAX_ADDRESSES + 5)]

        outcomes = await asyncio.gather(*(store.add_address(a) for a in attempts), return_exceptions=True)

        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(refused) == 5 and all(isinstance(o, AddressBookFull) for o in refused)
        assert len(await store.addresses("cust-1")) == MAX_ADDRESSES


class TestInMemoryAccountStore(AccountStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryAccountStore:
        return InMemoryAccountStore()


class TestMongoAccountStore(AccountStoreContract):
    @pytest.fixture
    async def store(self, mongo_store: MongoStore, settings: SharedSettings) -> MongoAccountStore:
        store = MongoAccountStore(mongo_store, PersonalData.from_settings(settings))
        await store.ensure_indexes()
        await store.ensure_indexes()  # a restart runs it again over the existing indexes
        return store

    async def test_no_personal_data_is_stored_in_clear(
        self, store: MongoAccountStore, mongo_store: MongoStore
    ) -> None:
        await store.create(account("cust-1", PHONE))
        await store.create(account("cust-2", EMAIL))
        await store.add_address(saved(label="妈妈家"))

        stored = repr(
            [
                *await mongo_store.db[ACCOUNTS].find().to_list(),
                *await mongo_store.db[ADDRESSES].find().to_list(),
            ]
        )

        for clear in ["13800138000", "li.lei@example.com", "李雷", "龙井路", "西湖区", "310000", "妈妈家"]:
            assert clear not in stored
        assert "cust-1" in stored  # the documents are there, only sealed

    async def test_the_login_index_is_keyed_so_another_key_finds_nothing(
        self, store: MongoAccountStore, mongo_store: MongoStore
    ) -> None:
        await store.create(account("cust-1", PHONE))
        other_key = PersonalData(SecretStr(Fernet.generate_key().decode()))

        assert await MongoAccountStore(mongo_store, other_key).by_login(PHONE) is None
