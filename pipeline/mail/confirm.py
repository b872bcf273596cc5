"""The double opt-in e-mail: "please confirm your subscription".

The link carries a signed "confirm" token that expires (``tokens.CONFIRM_MAX_AGE``);
the web app's ``/confirm/{token}`` turns the pending subscriber active. This is a
one-off transactional message, so it is built with the email package directly
(no per-recipient fast path needed) and has no List-Unsubscribe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

import jinja2

from pipeline import urls
from pipeline.channels.newsletter import compile_mjml
from pipeline.channels.templating import make_environment, render_template
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.subscriber_rows import Subscriber
from pipeline.ledger.tokens import CONFIRM_MAX_AGE, load_secret, make_token
from pipeline.mail.dkim import DkimSigner
from pipeline.mail.transports import Reply, Transport, send_one


def confirmation_message(
    settings: Settings,
    subscriber: Subscriber,
    *,
    now: datetime | None = None,
    secret: bytes | None = None,
    env: jinja2.Environment | None = None,
    signer: DkimSigner | None = None,
) -> bytes:
    """The signed confirmation e-mail. ``secret``, ``env`` and ``signer`` default to
    the ones ``settings`` give; a long-lived caller (the web app) passes its own."""
    now = now or datetime.now(UTC)
    token = make_token("confirm", subscriber.id, secret or load_secret(settings), now)
    subject = f"Please confirm your subscription to {settings.clinic.name}"
    context = {
        "subject": subject,
        "name": subscriber.name,
        "email": subscriber.email,
        "confirm_url": urls.confirm_url(settings, token),
        "valid_days": CONFIRM_MAX_AGE.days,
    }
    env = env or make_environment(settings)
    text = render_template(env, "email/confirm.txt", context)
    html = compile_mjml(render_template(env, "email/confirm.mjml", context), "email/confirm.mjml")
    news = settings.newsletter
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr((news.from_name, news.from_address))
    if news.reply_to:
        message["Reply-To"] = news.reply_to
    message["To"] = subscriber.email
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=news.from_domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text, charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    data = message.as_bytes()
    signer = signer or DkimSigner.from_settings(settings)
    return signer.sign(data) if signer else data


def send_confirmation(
    settings: Settings,
    transport: Transport,
    subscriber: Subscriber,
    *,
    now: datetime | None = None,
    secret: bytes | None = None,
    env: jinja2.Environment | None = None,
    signer: DkimSigner | None = None,
) -> Reply:
    """Send the confirmation e-mail to a pending subscriber, or to one who left and asked
    to come back (they stay unsubscribed until they click it)."""
    if subscriber.status == "active":
        raise PipelineError(f"{subscriber.email} is {subscriber.status}, not waiting for confirmation", field="email")
    message = confirmation_message(settings, subscriber, now=now, secret=secret, env=env, signer=signer)
    return send_one(transport, settings.envelope_sender, subscriber.email, message, "confirmation")
