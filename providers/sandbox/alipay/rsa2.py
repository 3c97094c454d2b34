"""RSA2 as Alipay uses it: SHA256withRSA (PKCS#1 v1.5), base64. Written with
``cryptography``, not the SDK, so that the simulator checks the SDK independently."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def sign(private_key: rsa.RSAPrivateKey, content: str) -> str:
    signature = private_key.sign(content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(public_key: rsa.RSAPublicKey, content: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, content.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def sign_content(params: dict[str, str], *, leave_out: tuple[str, ...]) -> str:
    """Alipay's string to sign: parameters but ``leave_out``, with a value, sorted by name,
    joined as ``k=v&k=v`` (requests leave out ``sign``; notifications ``sign`` and
    ``sign_type``)."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in leave_out and v)


@dataclass(frozen=True)
class Rsa2Keys:
    """A key pair in the PEM forms Alipay's console hands out (PKCS#1 private key, X.509
    public key). Made fresh for tests: no real key is ever in the repository."""

    private_pem: str
    public_pem: str

    @classmethod
    def generate(cls, bits: int = 2048) -> Rsa2Keys:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private.decode("ascii"), public.decode("ascii"))

    @classmethod
    def of_private(cls, private_pem: str) -> Rsa2Keys:
        """The pair of a private key given as PEM (its public half derived from it)."""
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private_pem, public.decode("ascii"))

    def private_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return key

    def public_key(self) -> rsa.RSAPublicKey:
        return load_public_key(self.public_pem)


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key
