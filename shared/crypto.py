"""Personal data at rest: sealed with Fernet (AES + HMAC, from `cryptography`), and looked up by a
keyed hash ("blind index") so that equality lookups never need the clear value in the database."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr


class UnreadableData(ValueError):
    """Sealed data that this key cannot open: the wrong key, or a damaged value."""


class PersonalData:
    def __init__(self, key: SecretStr) -> None:
        raw = key.get_secret_value().encode()
        try:
            self._fernet = Fernet(raw)
        except ValueError:
            raise ValueError("PII_ENCRYPTION_KEY must be 32 url-safe base64-encoded bytes") from None
        # A separate key for the blind index, so the index reveals nothing about the sealing key.
        self._index_key = hmac.digest(base64.urlsafe_b64decode(raw), b"blind-index", hashlib.sha256)

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise UnreadableData("sealed personal data could not be opened with this key") from None

    def blind_index(self, text: str) -> str:
        """A stable keyed hash of `text`, for finding a record by a personal value."""
        return hmac.new(self._index_key, text.encode(), hashlib.sha256).hexdigest()
