"""``pipeline.toml`` -> typed, validated settings.

Every option is declared once with its type: below, and the mail and social sections
in config_mail.py and config_social.py. Loading checks every key,
reports every bad one at once and then stops; secrets are never read from the
file, only from the environment.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError, field_validator

from pipeline import DEFAULT_CONFIG
from pipeline.config_base import Strict, email_address
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


class Clinic(Strict):
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


class Paths(Strict):
    posts: Path = Path("posts")
    templates: Path = Path("templates")
    out: Path = Path("out")
    state: Path = Path("state")


class FeedSettings(Strict):
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


class Utm(Strict):
    # A [utm] table in pipeline.toml turns the tags on (enabled = false turns them off
    # again): then social snippets and the newsletter's links to the clinic's own site
    # carry them. Without the table no link carries any.
    enabled: bool = True
    source: str = "{platform}"
    medium: str = "{medium}"
    campaign: str = "{slug}"


class Database(Strict):
    url: str = "sqlite:///state/pipeline.db"
    # How long a command waits for another process's write to a SQLite ledger before
    # it gives up with "the database is locked".
    busy_timeout_seconds: float = Field(30.0, gt=0)


class SchedulerSettings(Strict):
    rescan_seconds: float = Field(30, gt=0)
    digest_cron: str | None = None
    backfill_hours: float = Field(48, ge=0)
    require_approval: bool = False
    # How often the delivery job resumes unfinished campaigns and retries deferred (4xx) deliveries.
    delivery_seconds: float = Field(60, gt=0)
    # One scheduler per database: a scheduler that stops renewing its lock (its machine
    # crashed, or lost the database) is replaced after this long; renewed every quarter of it.
    lock_seconds: float = Field(60, ge=1)


class Settings(Strict):
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
