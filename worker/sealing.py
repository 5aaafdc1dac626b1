"""Secrets at rest: Fernet tokens under a key derived from ``CROPQ_SECRET_KEY``, one derivation per purpose.

Redis holds access-key secrets and webhook signing secrets; a dump of it alone must not reveal them. Each
token also seals the name of the record it belongs to (a key id, a project name), so a token copied onto
another record does not open there. The API seals, the API and the workers open, so every process that
reads these records needs the same ``CROPQ_SECRET_KEY``.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

ACCESS_KEYS = b"cropq access-key secrets v1"
WEBHOOK_SECRETS = b"cropq webhook secrets v1"


class SealingError(Exception):
    """``CROPQ_SECRET_KEY`` is missing or is not the one a token was sealed with, or a record was altered."""


class SecretBox:
    """Seal and open short secrets for one purpose (``info``), bound to the name of their record."""

    def __init__(self, secret_key: SecretStr, info: bytes) -> None:
        self._secret_key = secret_key
        self._info = info
        self._fernet: Fernet | None = None

    def _cipher(self) -> Fernet:
        if self._fernet is None:
            material = self._secret_key.get_secret_value()
            if not material:
                raise SealingError(
                    "CROPQ_SECRET_KEY is empty: it is needed to encrypt and read stored secrets. "
                    "Set it to a long random string, the same on every API and worker process."
                )
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=self._info).derive(
                material.encode("utf-8")
            )
            self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        return self._fernet

    def seal(self, owner: str, secret: str) -> str:
        return self._cipher().encrypt(f"{owner}\n{secret}".encode()).decode("ascii")

    def open(self, owner: str, token: str) -> str:
        try:
            plain = self._cipher().decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SealingError(
                f"The stored secret of {owner} cannot be decrypted: CROPQ_SECRET_KEY differs from the one "
                "it was sealed with, or the record was altered."
            ) from None
        sealed_owner, _, secret = plain.partition("\n")
        if sealed_owner != owner:
            raise SealingError(f"The stored secret of {owner} belongs to {sealed_owner}.")
        return secret
