"""DKIM signing of outgoing messages, with dkimpy.

Gmail and Yahoo count RFC 8058 one-click unsubscribe only when the DKIM
signature covers ``List-Unsubscribe`` and ``List-Unsubscribe-Post``, and DMARC
passes only when the signing domain (``d=``) aligns with the From domain. So
both headers are always signed and ``d=`` is always the From domain; neither is
configurable. The key is RSA (PEM); its path and selector come from
``pipeline.toml`` (``delivery.dkim_key``, ``delivery.dkim_selector``).
"""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from pipeline.config import Settings
from pipeline.errors import PipelineError

# Headers a reader or a filter relies on; listing one that is absent also signs its
# absence, so nobody can add it on the way.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"reply-to",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
    b"mime-version",
    b"content-type",
)
REQUIRED_SIGNED = (b"from", b"list-unsubscribe", b"list-unsubscribe-post")


class DkimSigner:
    def __init__(self, key_pem: bytes, selector: str, domain: str) -> None:
        try:
            self._params = parse_pem_private_key(key_pem)
        except (UnparsableKeyError, ValueError, IndexError) as exc:
            raise PipelineError(
                f"the DKIM key is not an RSA private key in PEM form: {exc}",
                field="delivery.dkim_key",
                hint="make one with: openssl genrsa -out state/dkim.pem 2048",
            ) from None
        self._key = key_pem
        self.selector = selector
        self.domain = domain.lower()

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The configured signer, or None when DKIM is not configured."""
        key_path, selector = settings.delivery.dkim_key, settings.delivery.dkim_selector
        if key_path is None and selector is None:
            return None
        if key_path is None or not selector:
            raise PipelineError(
                "DKIM needs both a key and a selector",
                field="delivery.dkim_key" if key_path is None else "delivery.dkim_selector",
                hint="set delivery.dkim_key and delivery.dkim_selector in pipeline.toml, or neither",
            )
        path = settings.resolve(Path(key_path))
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise PipelineError(
                f"cannot read the DKIM key: {exc.strerror}", path=path, field="delivery.dkim_key"
            ) from None
        return cls(key, selector, settings.newsletter.from_domain)

    def sign(self, message: bytes) -> bytes:
        """``message`` with a DKIM-Signature header in front."""
        signature = dkim.sign(
            message,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self._key,
            include_headers=list(SIGNED_HEADERS),
            # relaxed/relaxed survives the header re-folding and trailing-space
            # changes that relays make; simple would break on them.
            canonicalize=(b"relaxed", b"relaxed"),
        )
        return bytes(signature) + message

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record to publish at ``dns_name``."""
        return (
            "v=DKIM1; k=rsa; p="
            + base64.b64encode(_spki_der(self._params["modulus"], self._params["publicExponent"])).decode()
        )

    def verify(self, message: bytes) -> bool:
        """Check a signed message against this key, offline (no DNS)."""

        def lookup(name: bytes, timeout: int = 5) -> bytes:
            return self.dns_record().encode() if name.decode().rstrip(".").lower() == self.dns_name else b""

        return bool(dkim.verify(message, dnsfunc=lookup))


# --- a tiny DER encoder: the public half of the key, for the DNS record ------------------


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _spki_der(modulus: int, exponent: int) -> bytes:
    rsa_encryption = bytes.fromhex("06092a864886f70d0101010500")  # OID 1.2.840.113549.1.1.1, NULL
    public_key = _der(0x30, _der_int(modulus) + _der_int(exponent))
    return _der(0x30, _der(0x30, rsa_encryption) + _der(0x03, b"\x00" + public_key))
