"""Personal data sealed at rest, and found again by a keyed hash."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from shared.crypto import PersonalData, UnreadableData

pytestmark = pytest.mark.unit


def key() -> SecretStr:
    return SecretStr(Fernet.generate_key().decode())


def test_sealed_data_opens_with_its_key_only() -> None:
    mine, other = PersonalData(key()), PersonalData(key())
    sealed = mine.seal("13800138000")

    assert "13800138000" not in sealed
    assert mine.open(sealed) == "13800138000"
    with pytest.raises(UnreadableData):
        other.open(sealed)


def test_the_blind_index_is_stable_per_key_and_reveals_nothing() -> None:
    secret = key()
    one, same, other = PersonalData(secret), PersonalData(secret), PersonalData(key())

    assert one.blind_index("li@example.com") == same.blind_index("li@example.com")
    assert one.blind_index("li@example.com") != one.blind_index("lei@example.com")
    assert one.blind_index("li@example.com") != other.blind_index("li@example.com")
    assert "example" not in one.blind_index("li@example.com")


def test_a_malformed_key_is_refused_with_its_setting_named() -> None:
    with pytest.raises(ValueError, match="PII_ENCRYPTION_KEY"):
        PersonalData(SecretStr("not-a-key"))
