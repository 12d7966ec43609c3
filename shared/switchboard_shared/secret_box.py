"""Upstream keys encrypted at rest: Fernet, with a key derived from `SB_SECRET_KEY` by HKDF-SHA256.

Stored values carry a version prefix (`enc:v1:<Fernet token>`), so a value without
it is legacy plain text: `decrypt` hands it back unchanged until the legacy sweep
(`switchboard/encrypt_legacy.py`) encrypts it, and a future v2 can sit beside v1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .masking import mask

ENCRYPTED_PREFIX = "enc:v1:"
# Fixed salt and info: the key must be derivable from SB_SECRET_KEY alone, on every process.
_HKDF_SALT = b"switchboard"
_HKDF_INFO = b"switchboard upstream keys v1"
_PSEUDONYM_INFO = b"switchboard pseudonyms v1"
#: What the admin API shows for a stored key this process cannot decrypt.
UNDECRYPTABLE_MASK = "(cannot decrypt with this SB_SECRET_KEY)"


class SecretDecryptError(Exception):
    """A stored secret was encrypted with another SB_SECRET_KEY (or is corrupt). Never carries the value."""


class SecretBox:
    """Encrypts and decrypts stored secrets with the key derived from one secret string."""

    __slots__ = ("_fernet", "_pseudonym_key")

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the secret key must not be empty")
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret, _HKDF_INFO)))
        self._pseudonym_key = _derive(secret, _PSEUDONYM_INFO)

    def __repr__(self) -> str:
        return "SecretBox(…)"

    @staticmethod
    def is_encrypted(stored: str) -> bool:
        """Whether `stored` is in the encrypted form (else it is legacy plain text)."""
        return stored.startswith(ENCRYPTED_PREFIX)

    def encrypt(self, plaintext: str) -> str:
        """The stored form of `plaintext`: `enc:v1:<token>` (a new random IV each call)."""
        return ENCRYPTED_PREFIX + self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, stored: str) -> str:
        """The plain text of a stored value; a value without the prefix is legacy plain text, returned as is.

        Raises `SecretDecryptError` when the value was encrypted with another key.
        """
        if not self.is_encrypted(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(ENCRYPTED_PREFIX) :].encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise SecretDecryptError("a stored secret cannot be decrypted with this SB_SECRET_KEY") from None

    def pseudonym(self, *parts: str) -> str:
        """A stable, unguessable id for `parts` (HMAC-SHA256 under a key of its own, derived from the same secret).

        Every process with the same SB_SECRET_KEY computes the same pseudonym; without it,
        nobody can tell which parts it stands for.
        """
        message = "\x1f".join(parts).encode()
        return hmac.new(self._pseudonym_key, message, hashlib.sha256).hexdigest()[:32]

    def masked(self, stored: str) -> str:
        """How the admin API shows a stored secret: the mask of its plain text, or a marker if undecryptable."""
        try:
            return mask(self.decrypt(stored))
        except SecretDecryptError:
            return UNDECRYPTABLE_MASK


def _derive(secret: str, info: bytes) -> bytes:
    """A 32-byte key for one purpose (`info`), derived from the secret string by HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=info).derive(secret.encode())
