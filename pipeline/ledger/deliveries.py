"""The send loop's side of the ledger: claiming deliveries and recording what happened.

These run thousands of times a second inside ``Store`` transactions (``Store.claim_
deliveries``, ``record_outcomes``, ``record_and_claim``). The crash window is kept
small by recording outcomes promptly, in many small transactions, so each one has
to be cheap: the statements are built and compiled once per database dialect and
run through the driver directly, which skips SQLAlchemy's per-call work (several
times the database's own here). The SQL is compiled for the connection's dialect,
so it stays portable; parameters are plain integers and text, and times pass
through the column type's own bind processor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, Dialect, Engine, bindparam, or_, select, update
from sqlalchemy.sql import ClauseElement

from pipeline.ledger import columns
from pipeline.ledger.schema import deliveries, subscribers


class Claim(NamedTuple):
    """A delivery handed to a sender: marked 'sending' in the ledger."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str | None
    attempts: int  # before this one


class Outcome(NamedTuple):
    """What happened to one claimed delivery; ``Store.record_outcomes`` writes it.

    ``status``: 'sent', 'retry' (back to pending at ``next_attempt_at``), 'failed',
    'bounced' (and the subscriber too), or 'release' (not attempted: back to pending,
    no attempt counted).
    """

    delivery_id: int
    subscriber_id: int
    status: str
    reply: str = ""
    next_attempt_at: datetime | None = None


SKIPPED_REPLY = "not sent: subscriber is no longer active"

_TIME = columns.UTCDateTime()
# A delivery is due when it was never deferred, or its retry time has come.
_DUE = or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= bindparam("now", type_=_TIME))
_CLAIM = (
    select(
        deliveries.c.id,
        deliveries.c.subscriber_id,
        deliveries.c.attempts,
        subscribers.c.email,
        subscribers.c.name,
        subscribers.c.status,
    )
    .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
    .where(deliveries.c.campaign_id == bindparam("campaign_id"), deliveries.c.status == "pending", _DUE)
    .order_by(deliveries.c.id)
    .limit(bindparam("limit"))
)
# Exactly the rows the claim read: the same conditions up to the last id read, and
# nothing else changes a campaign's deliveries while its lease is held.
_MARK_RANGE = (
    update(deliveries)
    .where(
        deliveries.c.campaign_id == bindparam("campaign_id"),
        deliveries.c.status == "pending",
        deliveries.c.id <= bindparam("last_id"),
        _DUE,
    )
    .values(status="sending", updated_at=bindparam("now", type_=_TIME))
)
_SKIP = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(status="skipped", last_reply=SKIPPED_REPLY, updated_at=bindparam("now", type_=_TIME))
)
# Nearly every outcome is "sent": one statement run for the lot, with each reply (which
# carries the server's queue id, useful for tracing).
_SENT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == "sending")
    .values(
        status="sent",
        attempts=deliveries.c.attempts + 1,
        sent_at=bindparam("now", type_=_TIME),
        updated_at=bindparam("now", type_=_TIME),
        next_attempt_at=None,
        last_reply=bindparam("b_reply"),
    )
)
_RELEASE = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == "sending")
    .values(status="pending", updated_at=bindparam("now", type_=_TIME))
)
_RETRY = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == "sending")
    .values(
        status="pending",
        attempts=deliveries.c.attempts + 1,
        next_attempt_at=bindparam("b_next", type_=_TIME),
        last_reply=bindparam("b_reply"),
        updated_at=bindparam("now", type_=_TIME),
    )
)
_FINAL = (  # failed or bounced
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.status == "sending")
    .values(
        status=bindparam("b_status"),
        attempts=deliveries.c.attempts + 1,
        last_reply=bindparam("b_reply"),
        updated_at=bindparam("now", type_=_TIME),
    )
)
_BOUNCE_SUBSCRIBER = (
    update(subscribers)
    .where(subscribers.c.id == bindparam("b_id"), subscribers.c.status == "active")
    .values(
        status="bounced",
        updated_at=bindparam("now", type_=_TIME),
        status_reason=bindparam("b_reply"),
        status_changed_at=bindparam("now", type_=_TIME),
    )
)


class Executor(Protocol):
    """Runs one of this module's statements, once per row of parameters."""

    dialect: Dialect

    def run(self, statement: ClauseElement, rows: list[dict[str, Any]]) -> list[Any]:
        """The rows it returned (a SELECT), else []."""


def claim(ex: Executor, campaign_id: int, limit: int, now: datetime) -> tuple[list[Claim], int]:
    """Mark up to ``limit`` due deliveries 'sending' and return them, oldest first, with
    the number skipped (their subscriber is no longer active: marked 'skipped' here, so
    the status is checked at the moment of sending)."""
    if limit <= 0:
        return [], 0
    at = _bind_time(ex.dialect, now)
    rows = ex.run(_CLAIM, [{"campaign_id": campaign_id, "now": at, "limit": limit}])
    claims = [
        Claim(delivery_id=d_id, subscriber_id=s_id, email=email, name=name, attempts=attempts)
        for d_id, s_id, attempts, email, name, status in rows
        if status == "active"
    ]
    skipped = [{"b_id": row[0], "now": at} for row in rows if row[5] != "active"]
    if skipped:
        ex.run(_SKIP, skipped)
    if claims:
        ex.run(_MARK_RANGE, [{"campaign_id": campaign_id, "now": at, "last_id": rows[-1][0]}])
    return claims, len(skipped)


def record(ex: Executor, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Write what happened to claimed deliveries (only those still 'sending')."""
    at = _bind_time(ex.dialect, now)
    rows: dict[str, list[dict[str, Any]]] = {"sent": [], "release": [], "retry": [], "final": [], "bounced": []}
    for o in outcomes:
        if o.status == "sent":
            rows["sent"].append({"b_id": o.delivery_id, "b_reply": o.reply, "now": at})
        elif o.status == "release":
            rows["release"].append({"b_id": o.delivery_id, "now": at})
        elif o.status == "retry":
            next_at = _bind_time(ex.dialect, o.next_attempt_at) if o.next_attempt_at else None
            rows["retry"].append({"b_id": o.delivery_id, "b_next": next_at, "b_reply": o.reply, "now": at})
        elif o.status in ("failed", "bounced"):
            rows["final"].append({"b_id": o.delivery_id, "b_status": o.status, "b_reply": o.reply, "now": at})
            if o.status == "bounced":
                rows["bounced"].append({"b_id": o.subscriber_id, "b_reply": f"refused: {o.reply}", "now": at})
        else:
            raise ValueError(f"unknown outcome {o.status!r}")
    for name, statement in (
        ("sent", _SENT),
        ("release", _RELEASE),
        ("retry", _RETRY),
        ("final", _FINAL),
        ("bounced", _BOUNCE_SUBSCRIBER),
    ):
        if rows[name]:
            ex.run(statement, rows[name])


class ConnectionExecutor:
    """Runs the statements on a SQLAlchemy connection, inside its transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect

    def run(self, statement: ClauseElement, rows: list[dict[str, Any]]) -> list[Any]:
        sql, params = _params(self.dialect, statement, rows)
        result = self.conn.exec_driver_sql(sql, params[0] if len(params) == 1 else params)
        return list(result.all()) if result.returns_rows else []


class DeliverySession:
    """The send loop's own database connection for one run.

    Each ``record_and_claim`` is one transaction on the driver's connection, with no
    pool or SQLAlchemy work in between: at a few hundred small transactions a second,
    that work cost more than the database's own.
    """

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self._connection = engine.raw_connection()
        # SQLite runs in autocommit mode here (see store.make_engine): begin explicitly,
        # taking the write lock up front. Other drivers begin implicitly (PEP 249).
        self._begin = "BEGIN IMMEDIATE" if self.dialect.name == "sqlite" else None
        self._cursor: Any = None

    def run(self, statement: ClauseElement, rows: list[dict[str, Any]]) -> list[Any]:
        sql, params = _params(self.dialect, statement, rows)
        if len(params) == 1:
            self._cursor.execute(sql, params[0])
        else:
            self._cursor.executemany(sql, params)
        return list(self._cursor.fetchall()) if self._cursor.description is not None else []

    def record_and_claim(
        self, campaign_id: int, outcomes: Sequence[Outcome], limit: int, now: datetime
    ) -> tuple[list[Claim], int]:
        """``record`` then ``claim``, in one transaction."""
        self._cursor = self._connection.cursor()
        try:
            if self._begin:
                self._cursor.execute(self._begin)
            if outcomes:
                record(self, outcomes, now)
            claimed = claim(self, campaign_id, limit, now)
            self._connection.commit()
            return claimed
        except BaseException:
            self._connection.rollback()
            raise
        finally:
            self._cursor.close()
            self._cursor = None

    def close(self) -> None:
        self._connection.close()  # back to the pool


# --- precompiled statements ----------------------------------------------------------------


class _Prepared(NamedTuple):
    sql: str
    fixed: dict[str, Any]  # the statement's own constants ('sent', 'pending', NULL ...)
    values: Callable[[dict[str, Any]], Any] | None  # a row's values in order, for positional drivers


_PREPARED: dict[tuple[ClauseElement, str], _Prepared] = {}
_TIME_PROCESSORS: dict[str, Callable[[Any], Any] | None] = {}


def _bind_time(dialect: Dialect, value: datetime) -> Any:
    """``value`` as the driver takes it for a ``UTCDateTime`` column (SQLite: text)."""
    if dialect.name not in _TIME_PROCESSORS:
        _TIME_PROCESSORS[dialect.name] = _TIME.dialect_impl(dialect).bind_processor(dialect)
    processor = _TIME_PROCESSORS[dialect.name]
    return processor(value) if processor is not None else value


def _params(dialect: Dialect, statement: ClauseElement, rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """The statement's SQL for ``dialect`` (compiled once) and the driver's parameters
    for each row (times already bound with ``_bind_time``)."""
    key = (statement, dialect.name)
    prepared = _PREPARED.get(key)
    if prepared is None:
        compiled: Any = statement.compile(dialect=dialect)
        fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        values = None
        if compiled.positional:
            names = tuple(compiled.positiontup)
            values = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)
        prepared = _PREPARED[key] = _Prepared(compiled.string, fixed, values)
    fixed = prepared.fixed
    if prepared.values is None:
        return prepared.sql, [row | fixed for row in rows]
    values = prepared.values
    return prepared.sql, [values(row | fixed) for row in rows]
