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

from pipeline import urls
from pipeline.channels.newsletter import compile_mjml
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.render import make_environment, render_template
from pipeline.signing import DkimSigner
from pipeline.store import Subscriber
from pipeline.tokens import CONFIRM_MAX_AGE, load_secret, make_token
from pipeline.transports import Reply, Transport, TransportError


def confirmation_message(settings: Settings, subscriber: Subscriber, *, now: datetime | None = None) -> bytes:
    now = now or datetime.now(UTC)
    token = make_token("confirm", subscriber.id, load_secret(settings), now)
    subject = f"Please confirm your subscription to {settings.clinic.name}"
    context = {
        "subject": subject,
        "name": subscriber.name,
        "email": subscriber.email,
        "confirm_url": urls.confirm_url(settings, token),
        "valid_days": CONFIRM_MAX_AGE.days,
    }
    env = make_environment(settings)
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
    signer = DkimSigner.from_settings(settings)
    return signer.sign(data) if signer else data


def send_confirmation(
    settings: Settings, transport: Transport, subscriber: Subscriber, *, now: datetime | None = None
) -> Reply:
    """Send the confirmation e-mail to a pending subscriber, or to one who left and asked
    to come back (they stay unsubscribed until they click it)."""
    if subscriber.status == "active":
        raise PipelineError(f"{subscriber.email} is {subscriber.status}, not waiting for confirmation", field="email")
    message = confirmation_message(settings, subscriber, now=now)
    connection = transport.open()
    try:
        sender = settings.delivery.envelope_from or settings.newsletter.from_address
        reply = connection.send(sender, subscriber.email, message)
    finally:
        connection.close()
    if not reply.ok:
        raise TransportError(f"{transport.description} refused the confirmation to {subscriber.email}: {reply}")
    return reply
