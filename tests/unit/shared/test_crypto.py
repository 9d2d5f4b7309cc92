"""Personal data sealed at rest under rotating keys and found again by a keyed hash; the provider
token sealed so that only the payment service opens it."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from shared.crypto import (
    PersonalData,
    TokenOpener,
    TokenSealer,
    UnreadableData,
    derived_key_id,
    generate_index_key,
    generate_pii_key,
    generate_token_keypair,
    parse_key_ring,
)

pytestmark = pytest.mark.unit

PHONE = "13800138000"


def key() -> SecretStr:
    return SecretStr(Fernet.generate_key().decode())


def ring(*entries: str) -> SecretStr:
    return SecretStr(",".join(entries))


def body_of(sealed: str) -> bytearray:
    body = sealed.rsplit(".", 1)[1]
    return bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def with_body(sealed: str, body: bytes) -> str:
    head = sealed.rsplit(".", 1)[0]
    return f"{head}.{base64.urlsafe_b64encode(body).rstrip(b'=').decode()}"


def test_sealed_data_opens_with_its_key_only() -> None:
    mine, other = PersonalData(key()), PersonalData(key())
    sealed = mine.seal(PHONE)

    assert PHONE not in sealed
    assert mine.open(sealed) == PHONE
    with pytest.raises(UnreadableData):
        other.open(sealed)


def test_a_sealed_value_names_its_key_and_round_trips_any_text() -> None:
    personal = PersonalData(ring(f"2026a:{generate_index_key()}"))
    text = "浙江省杭州市西湖区龙井路 1 号 ☕"

    sealed = personal.seal(text)

    assert sealed.startswith("v1.2026a.")
    assert personal.key_id(sealed) == "2026a" == personal.sealing_key_id
    assert personal.open(sealed) == text
    assert personal.open(personal.seal("")) == ""


def test_equal_values_seal_differently() -> None:
    personal = PersonalData(key())
    assert personal.seal(PHONE) != personal.seal(PHONE)


def test_a_bare_key_gets_an_id_derived_from_it() -> None:
    secret = key()
    one, same = PersonalData(secret), PersonalData(secret)

    assert one.sealing_key_id == same.sealing_key_id != PersonalData(key()).sealing_key_id
    assert same.open(one.seal(PHONE)) == PHONE
    raw = base64.urlsafe_b64decode(secret.get_secret_value())
    assert one.sealing_key_id == derived_key_id(raw)
    assert secret.get_secret_value()[:8] not in one.sealing_key_id


def test_after_a_rotation_the_new_key_seals_and_the_old_one_still_opens() -> None:
    old_entry, new_entry = generate_pii_key("old"), generate_pii_key("new")
    before = PersonalData(ring(old_entry))
    sealed_before = before.seal(PHONE)

    after = PersonalData(ring(new_entry, old_entry))
    sealed_after = after.seal(PHONE)

    assert after.key_id(sealed_before) == "old" and after.key_id(sealed_after) == "new"
    assert after.open(sealed_before) == PHONE
    assert after.open(sealed_after) == PHONE
    resealed = after.seal(after.open(sealed_before))
    assert after.key_id(resealed) == after.sealing_key_id == "new"
    with pytest.raises(UnreadableData, match="'new'"):
        before.open(sealed_after)


def test_a_retired_key_id_is_named_when_its_value_cannot_be_opened() -> None:
    old = generate_pii_key("old")
    sealed = PersonalData(ring(old)).seal(PHONE)
    retired = PersonalData(ring(generate_pii_key("new")))

    with pytest.raises(UnreadableData, match="sealed with key 'old'.*PII_ENCRYPTION_KEYS") as refused:
        retired.open(sealed)
    assert old.split(":")[1] not in str(refused.value)


def test_another_key_under_the_same_id_does_not_open() -> None:
    sealed = PersonalData(ring(generate_pii_key("k1"))).seal(PHONE)

    with pytest.raises(UnreadableData, match="under key 'k1' did not open"):
        PersonalData(ring(generate_pii_key("k1"))).open(sealed)


def test_a_tampered_value_does_not_open() -> None:
    personal = PersonalData(key())
    sealed = personal.seal(PHONE)

    for position in (0, 12, -1):  # the nonce, the ciphertext, the tag
        body = body_of(sealed)
        body[position] ^= 0x01
        with pytest.raises(UnreadableData, match="did not open"):
            personal.open(with_body(sealed, bytes(body)))
    with pytest.raises(UnreadableData, match="too short"):
        personal.open(with_body(sealed, bytes(body_of(sealed)[:20])))


def test_a_value_moved_under_another_key_id_does_not_open() -> None:
    # The same key under two ids: only the associated data (the header) tells them apart.
    shared_key = generate_index_key()
    personal = PersonalData(ring(f"a:{shared_key}", f"b:{shared_key}"))
    sealed = personal.seal(PHONE)

    with pytest.raises(UnreadableData, match="under key 'b' did not open"):
        personal.open(sealed.replace("v1.a.", "v1.b.", 1))


@pytest.mark.parametrize(
    "garbage",
    ["", PHONE, "v1", "v1.k1", "v2.k1.AAAA", "v1.k!.AAAA", "v1.k1.not base64", "gAAAAABlZXhhbXBsZQ=="],
)
def test_garbage_is_unreadable(garbage: str) -> None:
    with pytest.raises(UnreadableData):
        PersonalData(key()).open(garbage)


def test_a_value_stored_in_clear_is_not_repeated_in_the_error() -> None:
    with pytest.raises(UnreadableData, match="not sealed personal data") as refused:
        PersonalData(key()).open(PHONE)
    assert PHONE not in str(refused.value)


def test_key_id_refuses_what_is_not_sealed() -> None:
    with pytest.raises(UnreadableData, match="not sealed personal data"):
        PersonalData(key()).key_id(PHONE)


def test_the_blind_index_is_stable_per_key_and_reveals_nothing() -> None:
    secret = key()
    one, same, other = PersonalData(secret), PersonalData(secret), PersonalData(key())

    assert one.blind_index("li@example.com") == same.blind_index("li@example.com")
    assert one.blind_index("li@example.com") != one.blind_index("lei@example.com")
    assert one.blind_index("li@example.com") != other.blind_index("li@example.com")
    assert "example" not in one.blind_index("li@example.com")


def test_the_blind_index_survives_a_rotation_when_its_key_is_given() -> None:
    index_key = SecretStr(generate_index_key())
    old, new = generate_pii_key("old"), generate_pii_key("new")
    before = PersonalData(ring(old), index_key)
    after = PersonalData(ring(new, old), index_key)

    assert before.blind_index(PHONE) == after.blind_index(PHONE)
    assert PersonalData(ring(old)).blind_index(PHONE) != PersonalData(ring(new, old)).blind_index(PHONE), (
        "without an index key the index follows the sealing key"
    )
    assert PersonalData(ring(old), SecretStr(generate_index_key())).blind_index(PHONE) != before.blind_index(
        PHONE
    )


@pytest.mark.parametrize(
    ("keys", "complaint"),
    [
        ("not-a-key", "entry 1 must be 32 bytes"),
        ("", "PII_ENCRYPTION_KEYS is empty"),
        ("k1:c2hvcnQ", "key 'k1' must be 32 bytes in base64url, not 5 bytes"),
        (
            "k1:***",
            "key 'k1' must be 32 bytes in base64url, it is not base64url (`shopctl keys pii` makes one)",
        ),
        ("k1", "entry 1 must be 32 bytes"),
        ("bad.id:" + "A" * 43, "a key id is 1 to 32 letters"),
        (":" + "A" * 43, "a key id is 1 to 32 letters"),
        ("k1:" + "A" * 43 + ",", "entry 2 is empty"),
        ("k1:" + "A" * 43 + ",k1:" + "B" * 43, "names key id 'k1' twice"),
    ],
)
def test_a_malformed_key_ring_is_refused_with_its_setting_named(keys: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="PII_ENCRYPTION_KEYS") as refused:
        PersonalData(SecretStr(keys))
    assert complaint in str(refused.value)
    assert "AAAAAAAA" not in str(refused.value) and "BBBBBBBB" not in str(refused.value)


def test_a_malformed_index_key_is_refused_with_its_setting_named() -> None:
    with pytest.raises(ValueError, match="PII_INDEX_KEY must be 32 bytes"):
        PersonalData(key(), SecretStr("too-short"))


def test_the_ring_keeps_the_sealing_key_first_and_accepts_padding_and_spaces() -> None:
    padded = Fernet.generate_key().decode()
    parsed = parse_key_ring(f" new:{generate_index_key()} , old:{padded} ")
    assert list(parsed) == ["new", "old"]
    assert all(len(raw) == 32 for raw in parsed.values())


def test_generated_pii_entries_are_fresh_and_well_formed() -> None:
    first, second = generate_pii_key(), generate_pii_key()

    assert first != second and first.split(":")[0] != second.split(":")[0]
    assert list(parse_key_ring(first)) == [first.split(":")[0]]
    assert generate_pii_key("2026-11").startswith("2026-11:")
    with pytest.raises(ValueError, match="not a key id"):
        generate_pii_key("has:colon")


# --- the provider token ---------------------------------------------------------------------------


def test_a_sealed_token_opens_with_the_matching_private_key_only() -> None:
    private, public = generate_token_keypair()
    opener = TokenOpener(SecretStr(private))
    sealed = TokenSealer(public).seal("tok_visa_4242")

    assert "tok_visa_4242" not in sealed and sealed.startswith("x25519.")
    assert opener.public_key == public
    assert opener.open(sealed) == "tok_visa_4242"
    other_private, _ = generate_token_keypair()
    with pytest.raises(UnreadableData, match="not to this key"):
        TokenOpener(SecretStr(other_private)).open(sealed)


def test_equal_tokens_seal_differently() -> None:
    _, public = generate_token_keypair()
    sealer = TokenSealer(public)
    assert sealer.seal("tok_1") != sealer.seal("tok_1")


@pytest.mark.parametrize("clear", ["tok_visa_4242", "", "x25519", "v1.k1.AAAA"])
def test_a_token_in_clear_is_refused_and_not_repeated(clear: str) -> None:
    private, _ = generate_token_keypair()

    with pytest.raises(UnreadableData, match="not a sealed token") as refused:
        TokenOpener(SecretStr(private)).open(clear)
    assert "tok_visa" not in str(refused.value)


def test_a_tampered_token_does_not_open() -> None:
    private, public = generate_token_keypair()
    opener = TokenOpener(SecretStr(private))
    sealed = TokenSealer(public).seal("tok_visa_4242")

    for position in (0, 32, 44, -1):  # the one-time key, the nonce, the ciphertext, the tag
        body = body_of(sealed)
        body[position] ^= 0x01
        with pytest.raises(UnreadableData, match="damaged"):
            opener.open(with_body(sealed, bytes(body)))
    with pytest.raises(UnreadableData, match="too short"):
        opener.open(with_body(sealed, bytes(body_of(sealed)[:50])))
    with pytest.raises(UnreadableData, match="damaged"):
        opener.open(with_body(sealed, bytes(32) + bytes(body_of(sealed)[32:])))


def test_token_keys_are_checked() -> None:
    with pytest.raises(ValueError, match="PAYMENT_TOKEN_PUBLIC_KEY must be 32 bytes"):
        TokenSealer("c2hvcnQ")
    with pytest.raises(ValueError, match="PAYMENT_TOKEN_PRIVATE_KEY must be 32 bytes"):
        TokenOpener(SecretStr("not a key"))
