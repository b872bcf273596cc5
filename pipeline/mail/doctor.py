"""``pipeline doctor``: check a rendered campaign message offline, list every problem.

What Gmail and Yahoo require of bulk senders since 2024, and what our own
invariants promise (DESIGN.md, invariant 5): the headers a receiver looks for,
one-click unsubscribe that counts (List-Unsubscribe and List-Unsubscribe-Post
covered by a DKIM signature whose d= aligns with the From domain), a plain-text
part, HTML small enough not to be clipped, the clinic's postal address and an
unsubscribe link in the body. No network: the DKIM signature is verified
against the configured key itself.
"""

from __future__ import annotations

import html
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr

from pipeline import urls
from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.tokens import make_token
from pipeline.mail.dkim import REQUIRED_SIGNED, DkimSigner
from pipeline.mail.message import PREVIEW_ADDRESS, MessageTemplate, message_id_for

REQUIRED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
GMAIL_CLIP_BYTES = 102 * 1024
# Domains whose DMARC policy rejects mail sent "From" them by anyone else's server.
FREEMAIL = ("gmail.com", "googlemail.com", "yahoo.com", "outlook.com", "hotmail.com", "aol.com", "icloud.com")
RECOMMENDED_SIGNED = (b"subject", b"date", b"to", b"message-id")
_SAMPLE_SECRET = b"doctor-sample-secret-not-for-sending"


def sample_message(settings: Settings, newsletter: Newsletter) -> tuple[bytes, DkimSigner | None, list[str]]:
    """The campaign's message as subscriber #1 would get it, signed if DKIM is configured."""
    problems: list[str] = []
    try:
        signer = DkimSigner.from_settings(settings)
    except PipelineError as error:
        signer = None
        problems.append(f"DKIM is misconfigured: {error}")
    template = MessageTemplate(newsletter, settings, signer=signer)
    message = template.personalise(
        to_address=PREVIEW_ADDRESS,
        to_name="Sample Subscriber",
        token=make_token("unsubscribe", 1, _SAMPLE_SECRET, newsletter.date),
        manage_token=make_token("manage", 1, _SAMPLE_SECRET, newsletter.date),
        message_id=message_id_for(0, 1, template.from_domain),
        date=newsletter.date,
    )
    return message, signer, problems


def diagnose(settings: Settings, newsletter: Newsletter) -> list[str]:
    """Every problem with ``newsletter`` as it would be sent, in words."""
    message, signer, problems = sample_message(settings, newsletter)
    return problems + check_message(message, settings, signer=signer)


def check_message(raw: bytes, settings: Settings, *, signer: DkimSigner | None) -> list[str]:
    """Every problem with one rendered message, in words (empty: none found)."""
    problems: list[str] = []
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    raw_headers = _raw_headers(raw)

    for name in REQUIRED_HEADERS:
        count = len(parsed.get_all(name) or [])
        if count == 0:
            problems.append(f"the {name} header is missing")
        elif count > 1 and name not in ("List-Id",):
            problems.append(f"the {name} header appears {count} times")
    for name, value in raw_headers:
        if len(name) + 2 + max((len(line) for line in value.split(b"\r\n")), default=0) > 998:
            problems.append(f"a line of the {name} header is longer than 998 characters (SMTP's limit)")

    problems += _check_unsubscribe_headers(raw_headers, settings)
    from_domain = _check_from(parsed, settings, problems)
    _check_body(parsed, raw, settings, problems)
    problems += _check_dkim(raw, raw_headers, from_domain, signer)
    return problems


def _raw_headers(raw: bytes) -> list[tuple[str, bytes]]:
    """Header fields exactly as sent (unfolded with their CRLFs kept), in order."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            raw_name, _, raw_value = line.partition(b":")
            fields.append((raw_name.decode("ascii", "replace").strip(), raw_value.strip()))
    return fields


def _header(raw_headers: list[tuple[str, bytes]], name: str) -> bytes | None:
    return next((value for key, value in raw_headers if key.lower() == name.lower()), None)


def _check_unsubscribe_headers(raw_headers: list[tuple[str, bytes]], settings: Settings) -> list[str]:
    problems: list[str] = []
    value = _header(raw_headers, "List-Unsubscribe")
    if value is not None:
        if b"=?" in value:
            problems.append(
                "List-Unsubscribe is RFC 2047-encoded, so mail programs cannot read the link "
                "(fold long headers at 998 characters, not 78)"
            )
        links = re.findall(rb"<([^>]*)>", value)
        https = [link for link in links if link.startswith(b"https://")]
        if not https:
            problems.append("List-Unsubscribe has no https:// link in angle brackets (one-click unsubscribe needs one)")
        elif not any(link.decode().startswith(urls.unsubscribe_url(settings, "")) for link in https):
            problems.append("List-Unsubscribe does not point at this site's /unsubscribe/ page")
        if urls.TOKEN_PLACEHOLDER.encode() in value:
            problems.append("List-Unsubscribe still holds the token placeholder")
    post = _header(raw_headers, "List-Unsubscribe-Post")
    if post is not None and post.strip() != b"List-Unsubscribe=One-Click":
        problems.append(f"List-Unsubscribe-Post must be exactly 'List-Unsubscribe=One-Click', not {post.decode()!r}")
    message_id = _header(raw_headers, "Message-ID")
    if message_id is not None and not re.fullmatch(rb"<[^<>@\s]+@[^<>@\s]+>", message_id.strip()):
        problems.append(f"the Message-ID {message_id.decode()!r} is not of the form <id@domain>")
    return problems


def _check_from(parsed: EmailMessage, settings: Settings, problems: list[str]) -> str:
    _name, address = parseaddr(str(parsed.get("From", "")))
    domain = address.rpartition("@")[2].lower()
    if not domain:
        problems.append("the From header has no address")
        return ""
    if domain != settings.newsletter.from_domain:
        problems.append(f"the From domain {domain} is not the configured {settings.newsletter.from_domain}")
    if domain in FREEMAIL:
        problems.append(
            f"the From address is at {domain}, whose DMARC policy rejects bulk mail sent from other servers; "
            "send from the clinic's own domain and use Reply-To for the inbox"
        )
    return domain


def _check_body(parsed: EmailMessage, raw: bytes, settings: Settings, problems: list[str]) -> None:
    text_part = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    text = str(text_part.get_content()) if text_part is not None else ""
    markup = str(html_part.get_content()) if html_part is not None else ""
    if text_part is None:
        problems.append("there is no plain-text part")
    if html_part is None:
        problems.append("there is no HTML part")
    else:
        size = len(markup.encode("utf-8"))
        limit = min(settings.newsletter.max_html_bytes, GMAIL_CLIP_BYTES)
        if size > limit:
            problems.append(
                f"the HTML is {size / 1024:.0f} KB, over {limit / 1024:.0f} KB: Gmail clips it and hides the footer"
            )
    if urls.TOKEN_PLACEHOLDER.encode() in raw or urls.MANAGE_PLACEHOLDER.encode() in raw:
        problems.append("an unsubscribe or manage token placeholder was left in the message")
    clinic = settings.clinic
    unsubscribe = urls.unsubscribe_url(settings, "")
    for label, body in (("plain-text", text), ("HTML", html.unescape(markup))):
        if not body:
            continue
        flat = " ".join(body.split())
        if clinic.street not in flat or clinic.postal_code not in flat:
            problems.append(f"the {label} part has no postal address ({clinic.postal_address})")
        if unsubscribe not in flat:
            problems.append(f"the {label} part has no unsubscribe link")


def _dkim_tags(value: bytes) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in b"".join(value.split()).split(b";"):
        key, _, tag_value = item.partition(b"=")
        if key:
            tags[key.decode().strip().lower()] = tag_value.decode()
    return tags


def _check_dkim(
    raw: bytes, raw_headers: list[tuple[str, bytes]], from_domain: str, signer: DkimSigner | None
) -> list[str]:
    if signer is None:
        return [
            f"the From domain {from_domain or '(none)'} has no DKIM key: set delivery.dkim_key and "
            "delivery.dkim_selector, and publish the key in DNS (one-click unsubscribe and DMARC need it)"
        ]
    value = _header(raw_headers, "DKIM-Signature")
    if value is None:
        return ["the message is not DKIM-signed though a key is configured"]
    problems: list[str] = []
    tags = _dkim_tags(value)
    domain = tags.get("d", "").lower()
    if not domain or not (from_domain == domain or from_domain.endswith("." + domain)):
        problems.append(f"the DKIM domain d={domain or '(none)'} does not align with the From domain {from_domain}")
    signed = {h.strip().lower().encode() for h in tags.get("h", "").split(":")}
    for name in REQUIRED_SIGNED:
        if name not in signed:
            problems.append(f"the DKIM signature does not cover {name.decode().title()}")
    for name in RECOMMENDED_SIGNED:
        if name not in signed:
            problems.append(f"the DKIM signature does not cover {name.decode().title()} (recommended)")
    if not signer.verify(raw):
        problems.append("the DKIM signature does not verify against the configured key")
    return problems
