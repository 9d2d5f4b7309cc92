"""Data sealed at rest and in transit, with the `cryptography` package.

Personal data (PersonalData): AES-256-GCM under a ring of named keys. Every sealed value says which
key sealed it, `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, and that header is the cipher's
associated data, so a value moved under another key id fails to open instead of opening as something
else. The first key of the ring seals; every key opens, which is how keys rotate: put the new key
first, keep the old ones until every value they sealed has been sealed again (see `key_id`).
Equality lookups go through a keyed hash ("blind index"), so the clear value never has to be stored.

The payment provider token (TokenSealer / TokenOpener): a sealed box. The gateway seals it to the
payment service's X25519 public key with a one-time key pair (ECDH, HKDF-SHA256, AES-256-GCM);
only the holder of the private key, the payment service, can open it.

Keys are 32 bytes written in base64url (padding optional), as `generate_pii_key` and
`generate_token_keypair` (`shopctl keys ...`) make them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

if TYPE_CHECKING:
    from shared.settings import SharedSettings

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
PII_FORMAT = "v1"
TOKEN_FORMAT = "x25519"  # noqa: S105 - the sealed token format's name, not a secret
KEYS_SETTING = "PII_ENCRYPTION_KEYS"
INDEX_KEY_SETTING = "PII_INDEX_KEY"
PUBLIC_KEY_SETTING = "PAYMENT_TOKEN_PUBLIC_KEY"
PRIVATE_KEY_SETTING = "PAYMENT_TOKEN_PRIVATE_KEY"
# The shopctl commands that make each kind of key, named in the errors about them.
MAKE_PII_KEY = "shopctl keys pii"
MAKE_INDEX_KEY = "shopctl keys pii-index"
MAKE_TOKEN_KEYS = "shopctl keys payment-token"  # noqa: S105 - a command, not a secret

# A key id travels in every sealed value, between dots: short, and no separator characters.
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class UnreadableData(ValueError):
    """Sealed data that these keys cannot open: an unknown key id, the wrong key, or a damaged value."""


def encode_key(raw: bytes) -> str:
    """Bytes as unpadded base64url, the way keys and sealed values are written."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    """base64url with or without its padding; anything else is a ValueError (the stdlib decoder
    would silently drop characters outside the alphabet)."""
    if _BASE64URL.fullmatch(text) is None:
        raise ValueError("not base64url")
    unpadded = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except binascii.Error:
        raise ValueError("not base64url") from None


def decode_key(text: str, setting: str, made_by: str) -> bytes:
    """A 32-byte key from its base64url text, or a ValueError naming `setting` and the command that
    makes one (`made_by`), never showing the key."""
    try:
        raw = _decode(text.strip())
    except ValueError:
        wrong = "it is not base64url"
    else:
        if len(raw) == KEY_BYTES:
            return raw
        wrong = f"not {len(raw)} bytes"
    raise ValueError(f"{setting} must be {KEY_BYTES} bytes in base64url, {wrong} (`{made_by}` makes one)")


def derived_key_id(raw: bytes) -> str:
    """The id of a key given without one: stable, and says nothing usable about the key."""
    return "k" + hashlib.sha256(b"shared.crypto key id\x00" + raw).hexdigest()[:12]


def parse_key_ring(text: str) -> dict[str, bytes]:
    """`kid:key[,kid:key...]` (or one bare key) as key id → key, the sealing key first.

    A ValueError naming PII_ENCRYPTION_KEYS says what is wrong; it never shows a key."""
    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise ValueError(f"{KEYS_SETTING} is empty: give kid:key[,kid:key...] (`{MAKE_PII_KEY}` makes one)")
    ring: dict[str, bytes] = {}
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise ValueError(f"{KEYS_SETTING} entry {position} is empty (a stray comma?)")
        kid, colon, key_text = entry.partition(":")
        if not colon:
            raw = decode_key(entry, f"{KEYS_SETTING} entry {position}", MAKE_PII_KEY)
            kid = derived_key_id(raw)
        elif KEY_ID.fullmatch(kid) is None:
            raise ValueError(f"{KEYS_SETTING} entry {position}: a key id is 1 to 32 letters, digits, _ or -")
        else:
            raw = decode_key(key_text, f"{KEYS_SETTING} key {kid!r}", MAKE_PII_KEY)
        if kid in ring:
            raise ValueError(f"{KEYS_SETTING} names key id {kid!r} twice: each key needs its own id")
        ring[kid] = raw
    return ring


def _hkdf(ikm: bytes, *, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(ikm)


@dataclass(frozen=True)
class _Sealed:
    kid: str
    header: bytes  # "v1.<kid>": the associated data the value was sealed with
    body: bytes


def _split(sealed: str) -> _Sealed:
    version, _, rest = sealed.partition(".")
    kid, dot, body = rest.partition(".")
    if version != PII_FORMAT or not dot or KEY_ID.fullmatch(kid) is None:
        # The value itself is not shown: it might be personal data stored in clear.
        raise UnreadableData(f"not sealed personal data (expected {PII_FORMAT}.<key id>.<data>)")
    try:
        raw = _decode(body)
    except ValueError:
        raise UnreadableData(f"sealed personal data under key {kid!r} is damaged: not base64url") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise UnreadableData(f"sealed personal data under key {kid!r} is damaged: too short")
    return _Sealed(kid, f"{version}.{kid}".encode(), raw)


class PersonalData:
    """Seals and opens personal data at rest with a ring of keys; finds it by its blind index.

    `keys` is PII_ENCRYPTION_KEYS: `kid:base64url-key[,kid:...]`, the first key seals and all open.
    `index_key` is PII_INDEX_KEY. Without it the index key is derived from the sealing key, so a
    rotation would change every blind index: production sets it, and keeps it across rotations."""

    def __init__(self, keys: SecretStr, index_key: SecretStr | None = None) -> None:
        ring = parse_key_ring(keys.get_secret_value())
        self._ciphers: Mapping[str, AESGCM] = {kid: AESGCM(raw) for kid, raw in ring.items()}
        self._sealing_kid, sealing_key = next(iter(ring.items()))
        if index_key is None:
            # A key of its own, so the index says nothing about the sealing key.
            self._index_key = _hkdf(sealing_key, info=b"shared.crypto blind index")
        else:
            self._index_key = decode_key(index_key.get_secret_value(), INDEX_KEY_SETTING, MAKE_INDEX_KEY)

    @classmethod
    def from_settings(cls, settings: SharedSettings) -> PersonalData:
        return cls(settings.pii_encryption_keys, settings.pii_index_key)

    @property
    def sealing_key_id(self) -> str:
        """The id of the key `seal` uses: a value whose `key_id` differs is due to be sealed again."""
        return self._sealing_kid

    def seal(self, text: str) -> str:
        header = f"{PII_FORMAT}.{self._sealing_kid}"
        # A random 96-bit nonce: equal values seal differently, and a key may seal ~2^32 values.
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = self._ciphers[self._sealing_kid].encrypt(nonce, text.encode(), header.encode())
        return f"{header}.{encode_key(nonce + ciphertext)}"

    def open(self, sealed: str) -> str:
        parts = _split(sealed)
        cipher = self._ciphers.get(parts.kid)
        if cipher is None:
            raise UnreadableData(
                f"sealed with key {parts.kid!r}, which {KEYS_SETTING} does not hold "
                f"(it holds {', '.join(map(repr, self._ciphers))})"
            )
        nonce, ciphertext = parts.body[:NONCE_BYTES], parts.body[NONCE_BYTES:]
        try:
            clear = cipher.decrypt(nonce, ciphertext, parts.header)
        except InvalidTag:
            raise UnreadableData(
                f"sealed personal data under key {parts.kid!r} did not open: it was damaged, or "
                f"{KEYS_SETTING} holds another key under that id"
            ) from None
        return clear.decode()

    def key_id(self, sealed: str) -> str:
        """The id of the key `sealed` was sealed with (whether or not this ring holds it)."""
        return _split(sealed).kid

    def blind_index(self, text: str) -> str:
        """A stable keyed hash of `text`, for finding a record by a personal value."""
        return hmac.new(self._index_key, text.encode(), hashlib.sha256).hexdigest()


# --- the payment provider token, sealed for the payment service ------------------------------------


def _box_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    # Both public keys go into the derivation, so the box key belongs to this exchange only.
    return _hkdf(shared, salt=ephemeral_public + recipient_public, info=b"shared.crypto payment token v1")


class TokenSealer:
    """Seals a provider token so that only the holder of the matching private key can open it."""

    def __init__(self, public_key: str) -> None:
        self._public = decode_key(public_key, PUBLIC_KEY_SETTING, MAKE_TOKEN_KEYS)
        self._recipient = X25519PublicKey.from_public_bytes(self._public)
        self._header = f"{TOKEN_FORMAT}.{derived_key_id(self._public)}"

    def seal(self, token: str) -> str:
        """`x25519.<recipient key id>.<base64url(one-time public key ‖ nonce ‖ ciphertext ‖ tag)>`."""
        ephemeral = X25519PrivateKey.generate()
        ephemeral_public = ephemeral.public_key().public_bytes_raw()
        box = AESGCM(_box_key(ephemeral.exchange(self._recipient), ephemeral_public, self._public))
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = box.encrypt(nonce, token.encode(), self._header.encode())
        return f"{self._header}.{encode_key(ephemeral_public + nonce + ciphertext)}"


class TokenOpener:
    """Opens tokens sealed to its key pair; refuses anything else, a token in clear included."""

    def __init__(self, private_key: SecretStr) -> None:
        raw = decode_key(private_key.get_secret_value(), PRIVATE_KEY_SETTING, MAKE_TOKEN_KEYS)
        self._private = X25519PrivateKey.from_private_bytes(raw)
        self._public = self._private.public_key().public_bytes_raw()
        self._key_id = derived_key_id(self._public)

    @property
    def public_key(self) -> str:
        """The public key to give the sealers (PAYMENT_TOKEN_PUBLIC_KEY), in base64url."""
        return encode_key(self._public)

    def open(self, sealed: str) -> str:
        scheme, _, rest = sealed.partition(".")
        kid, dot, body = rest.partition(".")
        if scheme != TOKEN_FORMAT or not dot:
            # Not shown: it may be a provider token in clear, which must not reach a log.
            raise UnreadableData(f"not a sealed token (expected {TOKEN_FORMAT}.<key id>.<data>)")
        if kid != self._key_id:
            raise UnreadableData(f"token sealed to key {kid!r}, not to this key ({self._key_id!r})")
        try:
            raw = _decode(body)
        except ValueError:
            raise UnreadableData("sealed token is damaged: not base64url") from None
        ephemeral_public = raw[:KEY_BYTES]
        nonce = raw[KEY_BYTES : KEY_BYTES + NONCE_BYTES]
        ciphertext = raw[KEY_BYTES + NONCE_BYTES :]
        if len(ciphertext) < TAG_BYTES:
            raise UnreadableData("sealed token is damaged: too short")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
            box = AESGCM(_box_key(shared, ephemeral_public, self._public))
            clear = box.decrypt(nonce, ciphertext, f"{scheme}.{kid}".encode())
        except (InvalidTag, ValueError):
            # ValueError: a one-time public key of low order, which no honest sealer makes.
            raise UnreadableData("sealed token did not open: it was damaged or tampered with") from None
        return clear.decode()


def generate_pii_key(kid: str | None = None) -> str:
    """A fresh PII_ENCRYPTION_KEYS entry, `kid:key`; the id is random unless given."""
    kid = kid if kid is not None else "k" + secrets.token_hex(4)
    if KEY_ID.fullmatch(kid) is None:
        raise ValueError(f"{kid!r} is not a key id: use 1 to 32 letters, digits, _ or -")
    return f"{kid}:{generate_index_key()}"


def generate_index_key() -> str:
    """A fresh 32-byte key in base64url: PII_INDEX_KEY, or the key of a PII_ENCRYPTION_KEYS entry."""
    return encode_key(secrets.token_bytes(KEY_BYTES))


def generate_token_keypair() -> tuple[str, str]:
    """A fresh (private, public) X25519 key pair in base64url, for PAYMENT_TOKEN_PRIVATE_KEY and
    PAYMENT_TOKEN_PUBLIC_KEY."""
    private = X25519PrivateKey.generate()
    return encode_key(private.private_bytes_raw()), encode_key(private.public_key().public_bytes_raw())


def token_public_key(private_key: str) -> str:
    """The public key matching a base64url X25519 private key."""
    return TokenOpener(SecretStr(private_key)).public_key
