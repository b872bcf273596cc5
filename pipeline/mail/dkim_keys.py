"""``pipeline dkim init``: a DKIM key, its place in pipeline.toml, and the DNS records to publish.

The key is 2048-bit RSA (what Gmail, Yahoo and Outlook.com expect; 1024 is on its way
out and 4096 does not fit every DNS provider's TXT form), written with mode 0600.
pipeline.toml is edited line by line, so its comments stay; the result is loaded
before it replaces the file, and written atomically.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.config import Settings, settings_from_mapping
from pipeline.errors import PipelineError
from pipeline.files import write_atomic
from pipeline.mail.dkim import DkimSigner

KEY_BITS = 2048
_SELECTOR = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class DnsRecord:
    name: str  # fully qualified, with the final dot
    kind: str  # TXT
    value: str
    why: str

    def zone_line(self) -> str:
        """The record as a zone-file line; a TXT value over 255 characters is split into
        quoted strings (DNS allows at most 255 a string; resolvers join them)."""
        pieces = [self.value[i : i + 255] for i in range(0, len(self.value), 255)] or [""]
        return f"{self.name} 3600 IN {self.kind} " + " ".join(f'"{piece}"' for piece in pieces)


def relay_host(settings: Settings) -> str | None:
    spec = settings.delivery.transport
    return urlsplit(spec).hostname if spec.startswith("smtp://") else None


def dkim_record(signer: DkimSigner) -> DnsRecord:
    return DnsRecord(
        f"{signer.dns_name}.",
        "TXT",
        signer.dns_record(),
        "DKIM: the public half of the key the newsletter is signed with",
    )


def spf_record(settings: Settings) -> DnsRecord:
    domain = settings.bounce_address.rpartition("@")[2].lower()
    relay = relay_host(settings)
    mechanism = f"a:{relay}" if relay else "include:YOUR-RELAY-SPF"
    return DnsRecord(
        f"{domain}.",
        "TXT",
        f"v=spf1 mx {mechanism} ~all",
        "SPF (a suggestion): the servers that may send for the envelope sender's domain; "
        + (
            f"{relay} is the relay in delivery.transport; use the include: your mail service documents, if it has one"
            if relay
            else "put the include: your mail service documents in place of include:YOUR-RELAY-SPF"
        )
        + "; keep one SPF record per domain (merge with any you have)",
    )


def dmarc_record(settings: Settings, report_address: str | None = None) -> DnsRecord:
    domain = settings.newsletter.from_domain
    report = report_address or f"dmarc-reports@{domain}"
    return DnsRecord(
        f"_dmarc.{domain}.",
        "TXT",
        f"v=DMARC1; p=none; rua=mailto:{report}; adkim=r; aspf=r",
        "DMARC: start at p=none and read the reports; once every source of your mail passes, "
        "move to p=quarantine, then p=reject",
    )


def make_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def init_dkim(
    settings: Settings, config_path: Path, *, selector: str, key_path: Path | None = None, force: bool = False
) -> tuple[Path, DkimSigner]:
    """Make the key, write it, point pipeline.toml at it; the new signer."""
    selector = selector.strip().lower()
    if not _SELECTOR.fullmatch(selector):
        raise PipelineError(
            f"{selector!r} is not a DKIM selector",
            field="--selector",
            hint="use letters, digits and hyphens, like news or news2027",
        )
    target = key_path or settings.paths.state / "dkim.pem"
    absolute = settings.resolve(target)
    if absolute.exists() and not force:
        raise PipelineError(
            "a DKIM key is already there",
            path=absolute,
            field="--key",
            hint="keep it (its DNS record is already published), or pass --force to replace it: mail is then "
            "signed with the new key, which fails DKIM until its record is in DNS; a new --selector avoids that",
        )
    pem = make_key()
    absolute.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(absolute, pem, mode=0o600)
    os.chmod(absolute, 0o600)  # write_atomic's mode passes through the umask; make sure
    shown = str(target) if not target.is_absolute() else str(absolute)
    set_delivery_keys(config_path, {"dkim_key": shown, "dkim_selector": selector})
    return absolute, DkimSigner(pem, selector, settings.newsletter.from_domain)


def set_delivery_keys(config_path: Path, values: dict[str, str]) -> None:
    """Set keys of [delivery] in pipeline.toml: replace each key's line (or its
    commented-out example), else add it under the table's header. Comments stay."""
    text = config_path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start, end = _table_span(lines, "delivery")
    if start is None:
        lines += ["\n" if lines and not lines[-1].endswith("\n") else "", "\n[delivery]\n"]
        start, end = len(lines) - 1, len(lines)
    for key, value in values.items():
        new = f"{key} = {_toml_string(value)}\n"
        live = re.compile(rf"^\s*{key}\s*=")
        example = re.compile(rf"^\s*#\s*{key}\s*=")
        spot = next((i for i in range(start + 1, end) if live.match(lines[i])), None)
        if spot is None:
            spot = next((i for i in range(start + 1, end) if example.match(lines[i])), None)
        if spot is None:
            lines.insert(start + 1, new)
            end += 1
        else:
            lines[spot] = new
    updated = "".join(lines)
    settings_from_mapping(tomllib.loads(updated), path=config_path, source=updated)  # still valid, or say why
    write_atomic(config_path, updated.encode("utf-8"), mode=config_path.stat().st_mode & 0o777)


def _table_span(lines: list[str], table: str) -> tuple[int | None, int]:
    start = None
    for index, line in enumerate(lines):
        header = line.strip()
        if header.startswith("[") and not header.startswith("[["):
            if start is not None:
                return start, index
            if header.split("#", 1)[0].strip() == f"[{table}]":
                start = index
    return start, len(lines)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
