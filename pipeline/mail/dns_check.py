"""``pipeline doctor --dns``: the DKIM, SPF and DMARC records the newsletter depends on,
looked up in DNS (dnspython) and held against the configuration.

- DKIM: a TXT record at ``SELECTOR._domainkey.FROM-DOMAIN`` holding the public half of
  the configured key (the signature's d= is the From domain by construction: aligned);
- SPF: one ``v=spf1`` record for the envelope sender's domain that names the relay,
  and that domain aligned with the From domain (the same, or one under it);
- DMARC: a ``v=DMARC1`` record at ``_dmarc.FROM-DOMAIN`` (or its parent domain), its
  policy and where its reports go.

Every lookup failure is said in words: a name that does not exist (NXDOMAIN), a name
with no TXT record, no answer in time, a server that failed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.exception
import dns.resolver

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.mail.dkim import DkimSigner
from pipeline.mail.dkim_keys import dkim_record, dmarc_record, relay_host, spf_record

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class DnsFinding:
    record: str  # DKIM, SPF, DMARC
    ok: bool
    message: str


class LookupFailed(Exception):
    """A DNS lookup that gave no usable answer; the message says why, in words."""


def make_resolver(nameserver: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> dns.resolver.Resolver:
    """The system's resolver, or one asking ``nameserver`` (``IP`` or ``IP:PORT``) only."""
    if nameserver is None:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        host, port = nameserver, 53
        if nameserver.count(":") == 1:
            host, _, port_text = nameserver.partition(":")
            if not port_text.isdigit():
                raise PipelineError(f"{nameserver!r} is not IP or IP:PORT", field="--nameserver")
            port = int(port_text)
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise PipelineError(
                f"{host!r} is not an IP address",
                field="--nameserver",
                hint="write it like 192.0.2.53 or 192.0.2.53:5353",
            ) from None
        resolver.nameservers = [host.strip("[]")]
        resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT records at ``name``, each one's strings joined; ``LookupFailed`` otherwise."""
    try:
        answer = resolver.resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        raise LookupFailed(f"{name} does not exist in DNS (NXDOMAIN)") from None
    except dns.resolver.NoAnswer:
        raise LookupFailed(f"{name} exists but has no TXT record") from None
    except dns.exception.Timeout:
        raise LookupFailed(
            f"no answer about {name} within {resolver.lifetime:g} s (the DNS server timed out)"
        ) from None
    except dns.resolver.NoNameservers:
        raise LookupFailed(f"every DNS server failed to answer about {name} (SERVFAIL or refused)") from None
    except dns.exception.DNSException as exc:
        raise LookupFailed(f"the lookup of {name} failed: {exc}") from None
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]  # type: ignore[attr-defined]


def addresses(resolver: dns.resolver.Resolver, name: str) -> set[str]:
    found: set[str] = set()
    for kind in ("A", "AAAA"):
        try:
            found |= {rdata.to_text() for rdata in resolver.resolve(name, kind)}
        except dns.exception.DNSException:
            continue
    return found


def check_dns(settings: Settings, resolver: dns.resolver.Resolver) -> list[DnsFinding]:
    return [_check_dkim(settings, resolver), _check_spf(settings, resolver), _check_dmarc(settings, resolver)]


def offline_notes(settings: Settings) -> list[str]:
    """What ``doctor`` without ``--dns`` did not look at."""
    domain = settings.newsletter.from_domain
    selector = settings.delivery.dkim_selector
    dkim_name = f"{selector}._domainkey.{domain}" if selector else "(no DKIM selector set)"
    spf_domain = settings.bounce_address.rpartition("@")[2]
    return [
        f"not checked (offline): the DKIM record at {dkim_name}, the SPF record of {spf_domain} and the DMARC "
        f"record at _dmarc.{domain}; run pipeline doctor --dns to look them up"
    ]


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for item in record.split(";"):
        key, _, value = item.strip().partition("=")
        if key:
            tags[key.strip().lower()] = value.strip()
    return tags


def _check_dkim(settings: Settings, resolver: dns.resolver.Resolver) -> DnsFinding:
    try:
        signer = DkimSigner.from_settings(settings)
    except PipelineError as error:
        return DnsFinding("DKIM", False, f"DKIM is misconfigured: {error}")
    if signer is None:
        return DnsFinding(
            "DKIM", False, "no DKIM key is configured: run pipeline dkim init, then publish the record it prints"
        )
    expected = _tags(signer.dns_record())["p"]
    publish = f"publish: {dkim_record(signer).zone_line()}"
    try:
        records = [r for r in txt_records(resolver, signer.dns_name) if "p=" in r]
    except LookupFailed as why:
        return DnsFinding("DKIM", False, f"{why}; {publish}")
    if not records:
        return DnsFinding("DKIM", False, f"{signer.dns_name} has TXT records but no DKIM key; {publish}")
    published = ["".join(_tags(r).get("p", "").split()) for r in records]
    if expected not in published:
        if any(not p for p in published):
            return DnsFinding("DKIM", False, f"the DKIM record at {signer.dns_name} is revoked (empty p=); {publish}")
        return DnsFinding(
            "DKIM",
            False,
            f"the DKIM record at {signer.dns_name} holds another key than {settings.delivery.dkim_key}: "
            f"receivers will fail every signature; {publish}",
        )
    return DnsFinding(
        "DKIM", True, f"{signer.dns_name} holds the configured key; d={signer.domain} aligns with the From domain"
    )


def _check_spf(settings: Settings, resolver: dns.resolver.Resolver) -> DnsFinding:
    from_domain = settings.newsletter.from_domain
    domain = settings.bounce_address.rpartition("@")[2].lower()
    suggestion = f"for example: {spf_record(settings).zone_line()}"
    aligned = domain == from_domain or domain.endswith("." + from_domain) or from_domain.endswith("." + domain)
    if not aligned:
        return DnsFinding(
            "SPF",
            False,
            f"the envelope sender's domain {domain} does not align with the From domain {from_domain}: SPF cannot "
            "pass DMARC for it; use a bounce address at the From domain (bounces.address)",
        )
    try:
        records = [r for r in txt_records(resolver, domain) if r.lower().startswith("v=spf1")]
    except LookupFailed as why:
        return DnsFinding("SPF", False, f"{why}; {suggestion}")
    if not records:
        return DnsFinding("SPF", False, f"{domain} has no SPF record (v=spf1); {suggestion}")
    if len(records) > 1:
        return DnsFinding(
            "SPF",
            False,
            f"{domain} has {len(records)} SPF records; receivers treat that as an error: merge them into one",
        )
    record = records[0]
    relay = relay_host(settings)
    if relay is None:
        return DnsFinding("SPF", True, f"{domain}: {record} (no SMTP relay configured to look for in it)")
    terms = record.lower().split()
    if relay.lower() in record.lower() or _covers_address(terms, addresses(resolver, relay)):
        return DnsFinding("SPF", True, f"{domain}: {record} names the relay {relay}")
    if any(term.lstrip("+?~-").startswith(("include:", "redirect=")) for term in terms):
        return DnsFinding(
            "SPF",
            True,
            f"{domain}: {record}; it does not name {relay} itself: make sure an include: in it covers the relay",
        )
    return DnsFinding("SPF", False, f"{domain}: {record} does not allow the relay {relay}; {suggestion}")


def _covers_address(terms: Sequence[str], found: set[str]) -> bool:
    for term in terms:
        mechanism, _, value = term.lstrip("+").partition(":")
        if mechanism not in ("ip4", "ip6") or not value:
            continue
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            continue
        if any(ipaddress.ip_address(address) in network for address in found):
            return True
    return False


def _check_dmarc(settings: Settings, resolver: dns.resolver.Resolver) -> DnsFinding:
    domain = settings.newsletter.from_domain
    suggestion = f"publish, to start: {dmarc_record(settings).zone_line()}"
    names = [f"_dmarc.{domain}"]
    parent = domain.split(".", 1)[1] if domain.count(".") >= 2 else None
    if parent:
        names.append(f"_dmarc.{parent}")  # the organisational domain's policy covers its subdomains
    reasons = []
    for name in names:
        try:
            records = [r for r in txt_records(resolver, name) if r.lower().startswith("v=dmarc1")]
        except LookupFailed as why:
            reasons.append(str(why))
            continue
        if not records:
            reasons.append(f"{name} has no DMARC record (v=DMARC1)")
            continue
        if len(records) > 1:
            return DnsFinding("DMARC", False, f"{name} has {len(records)} DMARC records: receivers ignore them all")
        tags = _tags(records[0])
        policy = tags.get("p", "")
        if policy not in ("none", "quarantine", "reject"):
            return DnsFinding(
                "DMARC", False, f"{name}: {records[0]} has no valid policy (p=none, quarantine or reject)"
            )
        reports = tags.get("rua", "")
        note = (
            "monitoring only: move to p=quarantine once the reports show only your own mail"
            if policy == "none"
            else "enforced"
        )
        where = f"reports go to {reports}" if reports else "no rua= report address: you will not see who sends as you"
        return DnsFinding("DMARC", True, f"{name}: p={policy} ({note}); {where}")
    return DnsFinding("DMARC", False, "; ".join(reasons) + f"; {suggestion}")
