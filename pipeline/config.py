"""``pipeline.toml`` -> typed, validated settings.

Every option is declared once with its type: below, and the mail and social sections
in config_mail.py and config_social.py. Loading checks every key,
reports every bad one at once and then stops; secrets are never read from the
file, only from the environment.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from pipeline import DEFAULT_CONFIG
from pipeline.config_base import Checks, Problem, Strict, email_address, http_url, structure
from pipeline.config_mail import BouncesSettings, DeliverySettings, NewsletterSettings
from pipeline.config_social import PLATFORMS, BlueskyPosting, DirectPosting, Handle, MastodonPosting, SocialSettings
from pipeline.errors import ConfigError, PipelineErrors

# Every name `from pipeline.config import ...` offers, wherever its section now lives.
__all__ = [
    "PLATFORMS",
    "BlueskyPosting",
    "BouncesSettings",
    "Clinic",
    "Database",
    "DeliverySettings",
    "DirectPosting",
    "FeedSettings",
    "Handle",
    "MastodonPosting",
    "NewsletterSettings",
    "Paths",
    "SchedulerSettings",
    "Settings",
    "SocialSettings",
    "Utm",
    "email_address",
    "load_settings",
    "settings_from_mapping",
]


def _contact(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme in ("mailto", "tel") and parts.path:
        return value
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError(
            f"{value!r} is not a full address; write it like 'https://example.org/book' "
            "(or 'mailto:desk@example.org', 'tel:+18439361642')"
        )
    return value


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'America/New_York'") from None
    return value


def _absolute_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an absolute http(s) URL; write it like 'https://example.org'")
    return value.rstrip("/")


class Clinic(Strict, frozen=True, kw_only=True):
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

    checks: ClassVar[Checks] = {
        "email": email_address,
        "contact_url": _contact,
        "timezone": _known_zone,
        "base_url": _absolute_url,
    }

    @property
    def contact_link(self) -> str:
        """``contact_url``, else an e-mail to the clinic: always something that exists."""
        return self.contact_url or f"mailto:{self.email}"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def postal_address(self) -> str:
        return f"{self.street}, {self.city}, {self.region} {self.postal_code}"


class Paths(Strict, frozen=True, kw_only=True):
    posts: Path = Path("posts")
    templates: Path = Path("templates")
    out: Path = Path("out")
    state: Path = Path("state")


def _hub(value: str) -> str:
    if not http_url(value):
        raise ValueError(f"websub_hub must be an http(s) URL, not {value!r}")
    return value


class FeedSettings(Strict, frozen=True, kw_only=True):
    title: str
    description: str
    max_items: Annotated[int, Meta(ge=1, le=1000)] = 20
    author: str
    # A WebSub hub: every feed names it (rel="hub") and each release pings it (hub.mode=publish).
    websub_hub: str | None = None

    checks: ClassVar[Checks] = {"websub_hub": _hub}


class Utm(Strict, frozen=True, kw_only=True):
    # A [utm] table in pipeline.toml turns the tags on (enabled = false turns them off
    # again): then social snippets and the newsletter's links to the clinic's own site
    # carry them. Without the table no link carries any.
    enabled: bool = True
    source: str = "{platform}"
    medium: str = "{medium}"
    campaign: str = "{slug}"


class Database(Strict, frozen=True, kw_only=True):
    url: str = "sqlite:///state/pipeline.db"
    # How long a command waits for another process's write to a SQLite ledger before
    # it gives up with "the database is locked".
    busy_timeout_seconds: Annotated[float, Meta(gt=0)] = 30.0


class SchedulerSettings(Strict, frozen=True, kw_only=True):
    rescan_seconds: Annotated[float, Meta(gt=0)] = 30
    digest_cron: str | None = None
    backfill_hours: Annotated[float, Meta(ge=0)] = 48
    require_approval: bool = False
    # How often the delivery job resumes unfinished campaigns and retries deferred (4xx) deliveries.
    delivery_seconds: Annotated[float, Meta(gt=0)] = 60
    # One scheduler per database: a scheduler that stops renewing its lock (its machine
    # crashed, or lost the database) is replaced after this long; renewed every quarter of it.
    lock_seconds: Annotated[float, Meta(ge=1)] = 60


class Settings(Strict, frozen=True, kw_only=True):
    clinic: Clinic
    paths: Paths = msgspec.field(default_factory=Paths)
    feed: FeedSettings
    newsletter: NewsletterSettings
    utm: Utm = msgspec.field(default_factory=lambda: Utm(enabled=False))
    social: SocialSettings
    database: Database = msgspec.field(default_factory=Database)
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    scheduler: SchedulerSettings = msgspec.field(default_factory=SchedulerSettings)
    bounces: BouncesSettings = msgspec.field(default_factory=BouncesSettings)
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
        return msgspec.structs.replace(self, paths=msgspec.structs.replace(self.paths, **changes))

    def fingerprint(self) -> bytes:
        """Every setting as JSON, the same wherever the file lives: what a cache keyed on
        the settings hashes."""
        return msgspec.json.encode(msgspec.structs.replace(self, root=Path(".")), enc_hook=str)


def _line_of(text: str, loc: tuple[str, ...]) -> int | None:
    """Best-effort line number of a dotted key in TOML source (tomllib keeps none); for a
    key that is missing, its table's header."""
    key = str(loc[-1]) if loc else ""
    table = ".".join(str(p) for p in loc[:-1])
    in_table = table == ""
    header = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("["):
            in_table = line.strip("[]").strip() == table
            header = number if in_table else header
            if not key or (not table and line.strip("[]").strip() == str(loc[0])):
                return number
            continue
        if in_table and line.split("=", 1)[0].strip() == key:
            return number
    return header


_ADDRESS_SETTINGS = ("email", "from_address", "reply_to", "envelope_from", "address")


def settings_from_mapping(data: dict[str, object], *, path: Path, source: str = "") -> Settings:
    problems: list[Problem] = []
    settings = structure(Settings, data, problems)
    if settings is not None:
        return msgspec.structs.replace(settings, root=path.parent)
    errors = []
    for problem in problems:
        hint = problem.hint
        if hint is None and problem.location and problem.location[-1] in _ADDRESS_SETTINGS:
            hint = "write a bare address such as news@example.org"
        line = _line_of(source, problem.location)
        errors.append(ConfigError(problem.message, path=path, line=line, field=".".join(problem.location), hint=hint))
    raise PipelineErrors(errors)


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
