"""The database connection: one engine per ledger, and the transaction helpers every part shares.

SQLite specifics live in ``make_engine`` only: WAL (readers never block the
writer), a busy timeout (several processes share the file: CLI, scheduler,
web app), foreign keys on, and ``BEGIN IMMEDIATE`` for writes so a transaction
that reads then writes waits for the lock instead of failing half-way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from pipeline.errors import ConfigError
from pipeline.faults import redact_url

BUSY_TIMEOUT_SECONDS = 30.0
_CHUNK = 500  # rows per IN (...) list: far below every database's parameter limit


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, *, busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys.

    A URL that cannot work (not a URL, an unknown or missing driver) is a
    ``ConfigError`` naming ``database.url``, its password hidden.
    """
    parsed = _parse_url(url)
    if parsed.get_backend_name() != "sqlite":
        return _create_engine(parsed, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = _create_engine(parsed, connect_args={"check_same_thread": False, "timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the sqlite3 module's legacy mode
        # skips BEGIN before SELECT and DDL); _on_begin emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # In WAL mode NORMAL survives a killed process; only a power cut may lose
        # the last commits. FULL would fsync every delivery.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("write", True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


_URL_HINT = "write it like sqlite:///state/pipeline.db or postgresql+psycopg://user@host/dbname"


def _parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise ConfigError(f"{redact_url(url)!r} is not a database URL", field="database.url", hint=_URL_HINT) from None


def _create_engine(url: URL, **options: Any) -> Engine:
    shown = url.render_as_string(hide_password=True)
    try:
        return create_engine(url, **options)
    except NoSuchModuleError:
        raise ConfigError(f"unknown database driver in {shown}", field="database.url", hint=_URL_HINT) from None
    except ImportError as exc:
        raise ConfigError(
            f"the database driver for {shown} is not installed: {exc}",
            field="database.url",
            hint="install it; for PostgreSQL: pip install -e '.[postgres]'",
        ) from None
    except ArgumentError as exc:
        raise ConfigError(f"cannot use {shown}: {exc}", field="database.url", hint=_URL_HINT) from None


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ledger:
    """An engine and its transactions: every method of a ledger part is one of them,
    committed when it returns, so the ledger is the truth even when the process is
    killed a moment later."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(write=False)
            with conn.begin():
                yield conn


class LedgerPart:
    """What a part of the ledger (mixed into ``Store``) may use: its transactions."""

    engine: Engine

    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError
