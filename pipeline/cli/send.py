"""``pipeline send``, ``send-test`` and ``doctor``: newsletters to subscribers.

``send`` goes through the one release path (``pipeline.schedule.release``): the same
checks as the scheduler (draft, date, e-mail channel, approval of the current
content), and the same records. It asks before it sends when run in a terminal.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from pipeline.channels.newsletter import render_post_newsletter
from pipeline.channels.templating import make_environment
from pipeline.cli.common import config_option, parse_when, pass_settings
from pipeline.cli.send_report import ProgressBar, console, print_summary
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store
from pipeline.mail import sender as delivery
from pipeline.mail.doctor import diagnose
from pipeline.mail.transports import OutboxTransport, Transport, transport_from_spec
from pipeline.schedule import plans, release
from pipeline.schedule.digest import digest_posts, digest_readers, send_digest
from pipeline.schedule.when import age, local
from pipeline.site.build import find_post

transport_option = click.option(
    "--transport",
    "transport_spec",
    metavar="SPEC",
    help='Override delivery.transport for this run: "outbox:PATH" or "smtp://[user@]host:port[?tls=starttls|ssl]".',
)


@click.command("send")
@config_option
@click.argument("slug", required=False)
@click.option("--digest", is_flag=True, help="Send a digest of every post e-mailed since the last digest (or --since).")
@click.option("--since", "since_text", metavar="TIME", help="With --digest: posts e-mailed after TIME.")
@click.option(
    "--resume", is_flag=True, help="Continue every unfinished campaign (after a crash, deferrals or a pause)."
)
@click.option(
    "--force",
    is_flag=True,
    help="With --resume: also send deliveries held after two interrupted sends (they may arrive twice).",
)
@transport_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.option("--dry-run", is_flag=True, help="Say what would be sent, to how many, and how; send nothing.")
@click.option(
    "--no-wait",
    is_flag=True,
    help="End when only deferred (4xx) deliveries remain instead of waiting to retry them.",
)
@pass_settings
def send_command(
    settings: Settings,
    slug: str | None,
    digest: bool,
    since_text: str | None,
    resume: bool,
    force: bool,
    transport_spec: str | None,
    yes: bool,
    dry_run: bool,
    no_wait: bool,
) -> None:
    """Send the newsletter for SLUG to every active subscriber (or --digest, or --resume).

    The same checks as the scheduler apply: a draft, a post dated in the future, a post
    with e-mail turned off, or (with require_approval) a post whose current text no
    clinician approved is refused. An old post may be sent; you are told how old it is.
    In a terminal it asks first; --yes skips the question, --dry-run sends nothing.

    The campaign and all its deliveries are written to the ledger first; then each
    message is marked before and after it is handed to the server. If the run is
    interrupted, `pipeline send --resume` sends what is left. Exits 1 if any delivery
    failed or bounced.
    """
    chosen = [name for name, on in (("SLUG", bool(slug)), ("--digest", digest), ("--resume", resume)) if on]
    if len(chosen) != 1:
        raise PipelineError(
            "say what to send" if not chosen else f"{' and '.join(chosen)} cannot be combined",
            field="send",
            hint="pipeline send SLUG, pipeline send --digest [--since TIME], or pipeline send --resume",
        )
    if since_text and not digest:
        raise PipelineError("--since only goes with --digest", field="--since")
    if force and not resume:
        raise PipelineError("--force only goes with --resume", field="--force", hint="pipeline send --resume --force")
    transport = transport_from_spec(transport_spec, settings)  # a bad spec fails before anything is written
    now = datetime.now(UTC)
    since = parse_when(since_text, settings, option="--since") if since_text else None
    with Store.open(settings) as store:
        if slug:
            question = _plan_post(settings, store, slug, now, transport)
        elif digest:
            question = _plan_digest(settings, store, since, now, transport)
        else:
            question = _plan_resume(settings, store, transport)
        if question is None:
            return
        if dry_run:
            click.echo(f"dry run: {question}; nothing sent")
            return
        _confirm(question, yes)
        campaign_id = _start(settings, store, slug, digest, since, now)
        console.print(f"sending via {transport.description}")
        with ProgressBar() as bar:
            try:
                summary = delivery.deliver(
                    store,
                    settings,
                    transport,
                    campaign_id,
                    bar.update,
                    wait_for_retries=not no_wait,
                    resume_paused=resume,
                    force=force,
                )
            except delivery.DeliveryAborted as aborted:
                bar.stop()
                print_summary(aborted.summary, transport)
                raise
    print_summary(summary, transport)
    if not summary.campaigns:
        console.print("nothing to send: every campaign is finished")
    busy = [c for c in summary.campaigns if c.busy_with]
    stopped = summary.paused or summary.held
    if not summary.ok or stopped or (busy and campaign_id is not None):
        raise click.exceptions.Exit(1)


def _recipients(count: int) -> str:
    return f"{count:,} active subscriber{'' if count == 1 else 's'}"


def _plan_post(settings: Settings, store: Store, slug: str, now: datetime, transport: Transport) -> str | None:
    plan = plans.plan_send(settings, store, slug, now)
    if plan.done is not None:
        click.echo(plan.done)
        return None
    if plan.continues is not None:
        return (
            f"Continue sending {plan.title!r} (campaign {plan.continues}): {plan.recipients:,} deliveries left, "
            f"via {transport.description}"
        )
    old = ""
    if now - plan.post_date > plans.OLD_POST:
        old = f" (dated {local(plan.post_date, settings)}, {age(plan.post_date, now)} ago)"
    later = f" (and to {plan.in_digest:,} in their next digest)" if plan.in_digest else ""
    return f"Send {plan.title!r}{old} to {_recipients(plan.recipients)}{later} via {transport.description}"


def _plan_digest(
    settings: Settings, store: Store, since: datetime | None, now: datetime, transport: Transport
) -> str | None:
    from pipeline.ledger.releases import LAST_DIGEST_KEY
    from pipeline.urls import digest_key

    existing = store.digest_campaigns_on(digest_key(now, settings))
    if existing:
        click.echo(
            f"today's digest ({existing[0].key}) was already started at {local(existing[0].created_at, settings)}; "
            "one digest a day: nothing sent"
        )
        return None
    last = store.get_meta(LAST_DIGEST_KEY)
    start = since or (datetime.fromisoformat(last) if last else store.recorded_first_run() or now)
    posts, left_out = digest_posts(settings, store, start, now)
    for reason in left_out:
        click.echo(f"left out of the digest: {reason}", err=True)
    if not posts:
        click.echo(f"nothing was e-mailed since {local(start, settings)}: there is nothing to put in a digest")
        return None
    readers = sum(len(ids) for ids in digest_readers(store, posts).values())
    if not readers:
        click.echo(
            f"no subscriber is owed the {len(posts)} post(s) e-mailed since {local(start, settings)}: "
            "each reader got them on their own; no digest to send"
        )
        return None
    titles = ", ".join(repr(p.title) for p in posts[:3]) + (", ..." if len(posts) > 3 else "")
    return (
        f"Send the digest of {len(posts)} post{'s' if len(posts) != 1 else ''} since {local(start, settings)} "
        f"({titles}) to {readers:,} digest reader{'' if readers == 1 else 's'} (each gets what they have not had) "
        f"via {transport.description}"
    )


def _plan_resume(settings: Settings, store: Store, transport: Transport) -> str | None:
    unfinished = store.list_campaigns(unfinished=True)
    owed = store.mailings(owed=True)
    if not unfinished and not owed:
        click.echo("nothing to resume: every campaign is finished and no newsletter is owed")
        return None
    left = 0
    for campaign in unfinished:
        counts = store.delivery_counts(campaign.id)
        left += counts["pending"] + counts["sending"]
    parts = []
    if unfinished:
        parts.append(f"continue {len(unfinished)} unfinished campaign(s) ({left:,} deliveries left)")
    if owed:
        parts.append(
            f"make and send the newsletter owed by {len(owed)} release(s) ({', '.join(m.slug for m in owed)}) "
            f"to {_recipients(store.count_subscribers()['active'])}"
        )
    return f"{' and '.join(parts).capitalize()} via {transport.description}"


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise PipelineError(
            "not sent: there is no terminal to confirm in",
            field="send",
            hint="pass --yes to send without a question, or --dry-run to see what would be sent",
        )
    if not click.confirm(f"{question}?", default=False):
        click.echo("nothing sent")
        raise click.exceptions.Exit(1)


def _start(
    settings: Settings, store: Store, slug: str | None, digest: bool, since: datetime | None, now: datetime
) -> int | tuple[int, ...] | None:
    """Release (or continue) what was asked for; the campaign(s) to deliver (None: all unfinished)."""
    if slug:
        outcome = release.release_post(settings, slug, now, store=store, deliver_now=False, explicit=True)
        if outcome.campaign_id is None:
            raise PipelineError(outcome.message, field="send")
        return outcome.campaign_id
    if digest:
        outcome = send_digest(settings, now, store=store, since=since, deliver_now=False)
        if not outcome.campaign_ids:
            raise PipelineError(outcome.message, field="send")
        return outcome.campaign_ids
    for owed in release.complete_owed(settings, store, now):
        if owed.campaign_id is None:
            console.print(owed.message, markup=False)
    return None


@click.command("send-test")
@config_option
@click.argument("slug")
@click.option("--to", "to", required=True, metavar="ADDRESS", help="Where to send the proof.")
@transport_option
@pass_settings
def send_test_command(settings: Settings, slug: str, to: str, transport_spec: str | None) -> None:
    """Send one proof copy of SLUG's newsletter to ADDRESS, whatever its state (a draft,
    a post dated in the future, one held for approval). Its subject is marked [Proof].
    Touches no subscriber and no ledger."""
    transport = transport_from_spec(transport_spec, settings)
    post = find_post(settings, slug)
    newsletter = render_post_newsletter(post, settings, make_environment(settings))
    reply = delivery.send_test(settings, transport, newsletter, to)
    where = "written to the outbox (not delivered)" if isinstance(transport, OutboxTransport) else "sent"
    click.echo(f"proof of {slug} {where} to {to} via {transport.description}: {reply}")


@click.command("doctor")
@config_option
@click.argument("slug", required=False)
@click.option("--dns", "check_dns", is_flag=True, help="Also look up the DKIM, SPF and DMARC records in DNS.")
@click.option(
    "--nameserver",
    metavar="IP[:PORT]",
    help="With --dns: ask this DNS server instead of the system's (e.g. your provider's, before the change spreads).",
)
@click.option(
    "--dns-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Seconds to wait per lookup."
)
@pass_settings
def doctor_command(
    settings: Settings, slug: str | None, check_dns: bool, nameserver: str | None, dns_timeout: float
) -> None:
    """Check SLUG's newsletter as it would be sent and list every problem; with --dns,
    also the sender authentication records in DNS.

    Works on drafts and on posts dated in the future. Checks headers, one-click
    unsubscribe, DKIM coverage and alignment, HTML size, plain-text part, postal
    address and unsubscribe link; with --dns, that the DKIM record holds the configured
    key, that SPF allows the relay for an envelope domain aligned with From, and that
    DMARC is published. Exits 1 if any problem is found. Also lists the social handles
    the clinic has not confirmed.
    """
    from pipeline.mail import dns_check

    if slug is None and not check_dns:
        raise PipelineError("say what to check", field="doctor", hint="pipeline doctor SLUG, or pipeline doctor --dns")
    problems: list[str] = []
    if slug is not None:
        post = find_post(settings, slug)
        newsletter = render_post_newsletter(post, settings, make_environment(settings))
        problems += diagnose(settings, newsletter)
    if check_dns:
        resolver = dns_check.make_resolver(nameserver, timeout=dns_timeout)
        for finding in dns_check.check_dns(settings, resolver):
            if finding.ok:
                click.echo(f"ok: {finding.record}: {finding.message}")
            else:
                problems.append(f"{finding.record}: {finding.message}")
    for problem in problems:
        click.echo(f"problem: {problem}")
    for handle in settings.social.handles.values():
        if not handle.confirmed:  # not a newsletter problem, but staff should know
            click.echo(f"unconfirmed handle: {handle.handle} (left out of every snippet until confirmed = true)")
    if not check_dns:
        for note in dns_check.offline_notes(settings):
            click.echo(f"note: {note}")
    what = f"the newsletter for {slug}" if slug else "the DNS records"
    if slug and check_dns:
        what += " and the DNS records"
    if problems:
        click.echo(f"{len(problems)} problem(s) in {what}")
        raise click.exceptions.Exit(1)
    click.echo(f"no problems found in {what}")


COMMANDS: list[click.Command] = [send_command, send_test_command, doctor_command]
