"""The vault's failures, as catalogue errors (domain/errors.py) so every caller treats them
alike: a command that meets one is dead-lettered (Kafka) or answered 4xx (REST), and
never reaches a provider.

    PaygateError
    ├── account_data_tampered      a ciphertext (value or wrapped key) does not authenticate
    ├── encryption_key_unknown     a ciphertext names a key id paygate does not hold
    ├── encryption_key_mismatch    the key under that id does not open it
    ├── payment_method_not_found   the token is unknown, deleted, expired or another client's
    └── client_shredded            the client's tokens were shredded: none is stored again
"""

from __future__ import annotations

from domain.errors import ErrorCode, PaygateError


def tampered(what: str) -> PaygateError:
    return PaygateError(ErrorCode.ACCOUNT_DATA_TAMPERED, f"{what} does not authenticate")


def key_unknown(kind: str, key_id: str) -> PaygateError:
    # Key ids are not secret: they name keys, and operators need them to fix this.
    return PaygateError(ErrorCode.ENCRYPTION_KEY_UNKNOWN, f"no {kind} with id {key_id!r}")


def key_mismatch(kind: str, key_id: str) -> PaygateError:
    return PaygateError(
        ErrorCode.ENCRYPTION_KEY_MISMATCH, f"the {kind} with id {key_id!r} does not open it"
    )


def client_shredded(client_id: str) -> PaygateError:
    # The client's own id (not secret: it names the caller); the number is never named.
    return PaygateError(
        ErrorCode.CLIENT_SHREDDED,
        f"the stored payment methods of client {client_id!r} were shredded: "
        "no payment method can be stored for it",
    )
