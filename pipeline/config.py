"""``pipeline.toml`` -> typed, validated settings.

Every option is declared once below with its type. Loading checks every key,
reports every bad one at once and then stops; secrets are never read from the
file, only from the environment.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline import DEFAULT_CONFIG
from pipeline.errors import ConfigError, PipelineErrors

PLATFORMS = ("x", "mastodon", "bluesky", "threads", "linkedin", "facebook", "instagram")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def email_address(value: str) -> str:
    """A bare e-mail address (no display name), checked by email-validator without DNS:
    a syntax check, so loading the configuration never waits on the network."""
    from email_validator import EmailNotValidError, validate_email  # ~30 ms: only when a config is loaded

    try:
        validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not an e-mail address: {exc}") from None
    return value


class Clinic(_Strict):
    name: str
    street: str
    city: str
    region: str
    postal_code: str
    country: str = "US"
    email: str
    phone: str
    timezone: str = "America/New_York"
    language: str = "en-US"
    base_url: str
    disclaimer: str
    # Where "contact us" and a post's [text](contact:) link lead: a booking or contact
    # page, or a mailto:/tel: link. Unset: an e-mail to the clinic (a page that exists).
    contact_url: str | None = None

    _email = field_validator("email")(email_address)

    @field_validator("contact_url")
    @classmethod
    def _contact(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme in ("mailto", "tel") and parts.path:
            return value
        if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
            raise ValueError(
                f"{value!r} is not a full address; write it like 'https://example.org/book' "
                "(or 'mailto:desk@example.org', 'tel:+18439361642')"
            )
        return value

    @property
    def contact_link(self) -> str:
        """``contact_url``, else an e-mail to the clinic: always something that exists."""
        return self.contact_url or f"mailto:{self.email}"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'America/New_York'") from None
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an absolute http(s) URL; write it like 'https://example.org'")
        return value.rstrip("/")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def postal_address(self) -> str:
        return f"{self.street}, {self.city}, {self.region} {self.postal_code}"


class Paths(_Strict):
    posts: Path = Path("posts")
    templates: Path = Path("templates")
    out: Path = Path("out")
    state: Path = Path("state")


class FeedSettings(_Strict):
    title: str
    description: str
    max_items: int = Field(20, ge=1, le=1000)
    author: str
    # A WebSub hub: every feed names it (rel="hub") and each release pings it (hub.mode=publish).
    websub_hub: str | None = None

    @field_validator("websub_hub")
    @classmethod
    def _hub(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname):
            raise ValueError(f"websub_hub must be an http(s) URL, not {value!r}")
        return value


class NewsletterSettings(_Strict):
    from_name: str
    from_address: str
    reply_to: str | None = None
    list_id: str
    max_html_bytes: int = Field(102_000, ge=1000)

    _addresses = field_validator("from_address", "reply_to")(email_address)

    @property
    def from_domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower()


class Utm(_Strict):
    # A [utm] table in pipeline.toml turns the tags on (enabled = false turns them off
    # again): then social snippets and the newsletter's links to the clinic's own site
    # carry them. Without the table no link carries any.
    enabled: bool = True
    source: str = "{platform}"
    medium: str = "{medium}"
    campaign: str = "{slug}"


class Handle(_Strict):
    handle: str
    confirmed: bool = False


class MastodonPosting(_Strict):
    server: str  # https://mastodon.social; the token is PIPELINE_MASTODON_TOKEN
    visibility: str = Field("public", pattern="^(public|unlisted|private)$")

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError(f"server must be the server's address, e.g. https://mastodon.social, not {value!r}")
        return value.rstrip("/")


class BlueskyPosting(_Strict):
    handle: str  # jamesonprosthetics.bsky.social; the app password is PIPELINE_BLUESKY_APP_PASSWORD
    service: str = "https://bsky.social"  # the account's PDS (its entryway for bsky.social accounts)

    @field_validator("handle")
    @classmethod
    def _handle(cls, value: str) -> str:
        return value.strip().lstrip("@")

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError(f"service must be an http(s) URL, not {value!r}")
        return value.rstrip("/")


class DirectPosting(_Strict):
    """Opt-in, per platform: the pipeline posts released posts there itself."""

    mastodon: MastodonPosting | None = None
    bluesky: BlueskyPosting | None = None
    # Attempts at one post (429, 5xx, network) before it waits for the next pass.
    max_attempts: int = Field(4, ge=1, le=20)
    retry_base_seconds: float = Field(2.0, ge=0)

    def platforms(self) -> tuple[str, ...]:
        return tuple(p for p in ("mastodon", "bluesky") if getattr(self, p) is not None)


class SocialSettings(_Strict):
    mastodon_limit: int = Field(500, ge=100)
    handles: dict[str, Handle]
    post: DirectPosting = DirectPosting()

    @field_validator("handles")
    @classmethod
    def _handles(cls, value: dict[str, Handle]) -> dict[str, Handle]:
        unknown = sorted(set(value) - set(PLATFORMS))
        if unknown:
            raise ValueError(f"unknown platform(s) {', '.join(unknown)}; known: {', '.join(PLATFORMS)}")
        missing = [p for p in PLATFORMS if p not in value]
        if missing:
            raise ValueError(f"missing handle(s) for {', '.join(missing)}; add [social.handles.<platform>]")
        x = value["x"].handle.lstrip("@")
        if len(x) > 15 or not x.replace("_", "").isalnum():
            raise ValueError(f"X handle @{x} is invalid: X usernames are 1-15 letters, digits or underscores")
        return value


class Database(_Strict):
    url: str = "sqlite:///state/pipeline.db"
    # How long a command waits for another process's write to a SQLite ledger before
    # it gives up with "the database is locked".
    busy_timeout_seconds: float = Field(30.0, gt=0)


class DeliverySettings(_Strict):
    transport: str = "outbox:state/outbox"
    concurrency: int = Field(4, ge=1, le=64)
    rate_per_second: float = Field(0, ge=0)
    max_attempts: int = Field(5, ge=1, le=50)
    retry_base_seconds: float = Field(2.0, ge=0)
    dkim_key: Path | None = None
    dkim_selector: str | None = None
    smtp_timeout: float = Field(30.0, gt=0)
    # The most one message's SMTP transaction may take, from MAIL FROM to the final reply
    # (smtp_timeout bounds each wait; a server trickling "250-" lines never trips it). On
    # expiry the connection is dropped and that delivery is retried later, like a 4xx.
    smtp_transaction_timeout: float = Field(120.0, gt=0)
    # Deliveries each sending thread holds at a time. At most concurrency x batch_size
    # messages are "in flight" (marked sending, outcome not yet recorded): after a crash
    # (kill -9), only those can reach a recipient twice; 4 x 4 = 16 by default.
    # 1 is strictest; larger is faster on a fast relay, with a larger crash window.
    batch_size: int = Field(4, ge=1, le=1000)
    # Pause the campaign when more than this share of a run's attempts fail permanently:
    # that many refusals point at the relay, our sender or a stale list, not at a few bad
    # addresses. `pipeline send --resume` continues it. 1 turns the breaker off.
    pause_failure_share: float = Field(0.05, ge=0, le=1)
    # MAIL FROM (where bounces go); defaults to newsletter.from_address.
    envelope_from: str | None = None
    # Ask DNS whether an address's domain accepts mail when adding or importing.
    check_deliverability: bool = False

    _envelope_from = field_validator("envelope_from")(email_address)


class BouncesSettings(_Strict):
    """Where bounces and complaints come back, and how the scheduler reads them."""

    # The mailbox that bounces and feedback reports reach. A campaign message's envelope
    # sender is LOCAL+TOKEN@DOMAIN of it (VERP), so the mailbox must take "+" sub-addresses.
    # Default: delivery.envelope_from, else bounces@ the From domain.
    address: str | None = None
    verp: bool = True
    # Read by `pipeline bounces process` and by the scheduler: a Maildir folder, or an
    # IMAP mailbox (imaps://user@host[:port][/FOLDER]; password from PIPELINE_IMAP_PASSWORD).
    maildir: Path | None = None
    imap: str | None = None
    # How often the scheduler reads the mailbox; unset: it does not.
    poll_seconds: float | None = Field(None, gt=0)
    # Temporary failures (4.x.x) that bounce an address: this many within this many days.
    temporary_limit: int = Field(3, ge=1)
    temporary_days: float = Field(30, gt=0)

    _address = field_validator("address")(email_address)


class SchedulerSettings(_Strict):
    rescan_seconds: float = Field(30, gt=0)
    digest_cron: str | None = None
    backfill_hours: float = Field(48, ge=0)
    require_approval: bool = False
    # How often the delivery job resumes unfinished campaigns and retries deferred (4xx) deliveries.
    delivery_seconds: float = Field(60, gt=0)
    # One scheduler per database: a scheduler that stops renewing its lock (its machine
    # crashed, or lost the database) is replaced after this long; renewed every quarter of it.
    lock_seconds: float = Field(60, ge=1)


class Settings(_Strict):
    clinic: Clinic
    paths: Paths = Paths()
    feed: FeedSettings
    newsletter: NewsletterSettings
    utm: Utm = Utm(enabled=False)
    social: SocialSettings
    database: Database = Database()
    delivery: DeliverySettings = DeliverySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    bounces: BouncesSettings = BouncesSettings()
    # Where the file lives; relative paths in it are relative to this folder.
    root: Path = Path(".")

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.root / path

    @property
    def posts_dir(self) -> Path:
        return self.resolve(self.paths.posts)

    @property
    def templates_dir(self) -> Path:
        return self.resolve(self.paths.templates)

    @property
    def out_dir(self) -> Path:
        return self.resolve(self.paths.out)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.paths.state)

    @property
    def envelope_sender(self) -> str:
        """MAIL FROM: ``delivery.envelope_from``, else ``newsletter.from_address``."""
        return self.delivery.envelope_from or self.newsletter.from_address

    @property
    def bounce_address(self) -> str:
        """The bounce mailbox: ``bounces.address``, else ``delivery.envelope_from``, else
        bounces@ the From domain."""
        return self.bounces.address or self.delivery.envelope_from or f"bounces@{self.newsletter.from_domain}"

    def verp_sender(self, token: str) -> str:
        """The envelope sender of one campaign message: ``LOCAL+TOKEN@DOMAIN`` of the
        bounce mailbox (or the mailbox itself with ``bounces.verp = false``)."""
        address = self.bounce_address
        if not self.bounces.verp:
            return address
        local, _, domain = address.rpartition("@")
        return f"{local}+{token}@{domain}"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL with a relative SQLite path made absolute."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str((self.root / url[len(prefix) :]).resolve())
        return url

    def with_paths(self, **overrides: Path | None) -> Settings:
        """A copy with some paths replaced (from command-line options)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        return self.model_copy(update={"paths": self.paths.model_copy(update=changes)})


def _known_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None or not isinstance(part, str) or part not in current.model_fields:
            return []
        annotation = current.model_fields[part].annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return list(current.model_fields) if current else []


def _line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of a dotted key in TOML source (tomllib keeps none)."""
    key = str(loc[-1]) if loc else ""
    table = ".".join(str(p) for p in loc[:-1])
    in_table = table == ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("["):
            in_table = line.strip("[]").strip() == table
            if not key or (not table and line.strip("[]").strip() == str(loc[0])):
                return number
            continue
        if in_table and line.split("=", 1)[0].strip() == key:
            return number
    return None


_ADDRESS_SETTINGS = ("email", "from_address", "reply_to", "envelope_from", "address")


def settings_from_mapping(data: dict[str, object], *, path: Path, source: str = "") -> Settings:
    try:
        return Settings.model_validate({**data, "root": path.parent})
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(p) for p in loc)
            hint = None
            if err["type"] == "extra_forbidden":
                known = _known_keys(Settings, loc)
                close = difflib.get_close_matches(str(loc[-1]), known, n=1)
                message = "unknown setting"
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            elif err["type"] == "missing":
                message = "required setting is missing"
            else:
                message = str(err["msg"]).removeprefix("Value error, ")
                if loc and loc[-1] in _ADDRESS_SETTINGS:
                    hint = "write a bare address such as news@example.org"
            errors.append(ConfigError(message, path=path, line=_line_of(source, loc), field=dotted, hint=hint))
        raise PipelineErrors(errors) from None


def load_settings(path: str | Path = DEFAULT_CONFIG) -> Settings:
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "configuration file not found", path=path, hint="pass --config FILE or run from the project folder"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("configuration is not UTF-8 text", path=path) from None
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(f"invalid TOML: {exc}", path=path, line=line, hint="check quotes and brackets") from None
    return settings_from_mapping(data, path=path, source=source)
