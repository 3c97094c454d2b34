"""Encrypt an account number to paygate's public key, for an upstream service that puts
payment commands on Kafka itself and must not hold a secret (nor a clear number on the bus).

Self-contained on purpose (only the ``cryptography`` package): copy it into the producing
service as it is. Usage::

    public_key_pem = ...  # GET /v1/payment_methods/encryption_key -> "publicKey" (cache it)
    record["payerAccount"] = {
        "type": "card",
        "holderName": None,
        "number": None,
        "token": None,
        "encrypted": encrypt_account_number(public_key_pem, "card", number),
    }

The scheme (``RSA-OAEP-256+A256GCM``): a fresh AES-256 key encrypts the number with
AES-256-GCM (fresh 96-bit nonce; the key id and the account type as associated data, so the
value cannot be relabelled), and RSA-OAEP with SHA-256 encrypts that AES key to the public
key. Only paygate's consumer holds the private key; it decrypts the number into its vault at
first read and publishes only a token from then on.
"""

from __future__ import annotations

import hashlib
import os
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ALGORITHM: Final = "RSA-OAEP-256+A256GCM"


def public_key_id(public_key_pem: bytes) -> str:
    """The id paygate publishes its key under: a digest of the key itself, so a producer
    can compute it too and a rotated key never reuses an id."""
    key = serialization.load_pem_public_key(public_key_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "ak_" + hashlib.sha256(der).hexdigest()[:16]


def associated_data(key_id: str, account_type: str) -> bytes:
    return f"{ALGORITHM}\x1f{key_id}\x1f{account_type}".encode()


def oaep() -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def encrypt_account_number(
    public_key_pem: bytes, account_type: str, number: str
) -> dict[str, object]:
    """The Avro ``EncryptedNumber`` record (create_payment.v4) of ``number``."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("paygate's account encryption key is an RSA public key")
    key_id = public_key_id(public_key_pem)
    content_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ciphertext = AESGCM(content_key).encrypt(
        nonce, number.encode(), associated_data(key_id, account_type)
    )
    return {
        "keyId": key_id,
        "wrappedKey": key.encrypt(content_key, oaep()),
        "nonce": nonce,
        "ciphertext": ciphertext,
    }
