"""The ledger on a real SQLite file: migrations, constraints, campaigns, leases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, delete, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from pipeline.channels.newsletter import Newsletter
from pipeline.config import Settings
from pipeline.ledger import migrations, schema
from pipeline.ledger.campaigns import Campaign
from pipeline.ledger.deliveries import Outcome
from pipeline.ledger.engine import make_engine
from pipeline.ledger.locks import DatabaseLock
from pipeline.ledger.store import Store
from pipeline.ledger.subscriber_rows import SubscriberExists


def create_campaign(store: Store, newsletter: Newsletter, kind: str, **kwargs: Any) -> tuple[Campaign, bool]:
    """A campaign for ``newsletter``, frozen as the mail layer freezes it."""
    return store.create_campaign(newsletter.key, kind, newsletter.subject, newsletter.to_json(), **kwargs)


NOW = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)


def newsletter(key: str = "a-post") -> Newsletter:
    return Newsletter(
        key=key,
        subject="Subject",
        preheader="Preheader",
        html="<p>html</p>",
        text="text",
        web_html="",
        web_url="https://example.org/a",
        date=NOW,
        slugs=(key,),
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


@pytest.mark.usefixtures("each_ledger")
def test_migrations_run_once_and_are_recorded(settings: Settings) -> None:
    engine = Store.open(settings).engine
    with engine.connect() as conn:
        names = list(conn.scalars(select(migrations.schema_migrations.c.name)))
    assert names == [name for name, _ in migrations.MIGRATIONS]
    assert migrations.migrate(engine) == []  # nothing left to apply
    engine.dispose()


@pytest.mark.usefixtures("each_ledger")
def test_tables_match_the_current_schema(store: Store) -> None:
    """Fails when a table is changed without a migration (or the reverse)."""
    with store.engine.connect() as conn:
        actual = migrations.table_columns(conn)
    expected = {name: [c.name for c in table.columns] for name, table in schema.metadata.tables.items()}
    expected["schema_migrations"] = ["name", "applied_at"]
    assert actual == expected


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


@pytest.mark.usefixtures("each_ledger")
def test_two_processes_opening_a_new_database_at_once(settings: Settings) -> None:
    script = "import sys; from pipeline.ledger.store import Store; Store.open_url(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", script, settings.database_url]) for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    with Store.open(settings) as store, store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM schema_migrations")).scalar() == len(migrations.MIGRATIONS)


def test_email_is_unique_case_insensitively(store: Store) -> None:
    first = store.add_subscriber("Ann@Example.com", "Ann")
    with pytest.raises(SubscriberExists) as info:
        store.add_subscriber("ann@example.COM")
    assert info.value.existing.id == first.id
    assert store.get_subscriber_by_email("ANN@example.com") == first
    assert first.email == "Ann@Example.com"  # shown as given


def test_status_changes_stamp_aware_utc_times(store: Store) -> None:
    sub = store.add_subscriber("p@example.com", status="pending", now=NOW)
    assert sub.confirmed_at is None and sub.created_at == NOW and sub.created_at.tzinfo is not None
    later = NOW + timedelta(hours=1)
    active = store.set_subscriber_status(sub.id, "active", now=later)
    assert active.confirmed_at == later
    gone = store.set_subscriber_status(sub.id, "unsubscribed", now=later + timedelta(days=1))
    assert gone.unsubscribed_at == later + timedelta(days=1)
    assert store.set_subscriber_status(sub.id, "unsubscribed") == gone  # no change, no new stamp
    with pytest.raises(ValueError):
        store.set_subscriber_status(sub.id, "deleted")


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive"):
        store.add_subscriber("n@example.com", now=datetime(2026, 1, 1))


def test_database_refuses_unknown_status(store: Store) -> None:
    sub = store.add_subscriber("c@example.com")
    with pytest.raises(Exception, match="CHECK"), store.engine.begin() as conn:
        conn.execute(schema.subscribers.update().where(schema.subscribers.c.id == sub.id).values(status="zombie"))


def test_publication_is_recorded_once(store: Store) -> None:
    assert store.record_publication("a-post", "email", NOW, "hash1") is True
    assert store.record_publication("a-post", "email", NOW + timedelta(days=1), "hash2") is False
    assert store.record_publication("a-post", "social", NOW, "hash1") is True
    assert store.is_published("a-post", "email") and not store.is_published("b-post", "email")
    publication = store.get_publication("a-post", "email")
    assert publication is not None and publication.content_hash == "hash1" and publication.released_at == NOW
    assert [p.channel for p in store.list_publications()] == ["email", "social"]


def test_meta(store: Store) -> None:
    assert store.get_meta("first_run_at") is None
    assert store.setdefault_meta("first_run_at", "2026-11-03T14:00:00Z") == "2026-11-03T14:00:00Z"
    assert store.setdefault_meta("first_run_at", "later") == "2026-11-03T14:00:00Z"
    store.set_meta("first_run_at", "changed")
    assert store.get_meta("first_run_at") == "changed"


def test_campaign_rows_for_active_subscribers_only_and_idempotent(store: Store) -> None:
    for i in range(5):
        store.add_subscriber(f"a{i}@example.com")
    store.add_subscriber("p@example.com", status="pending")
    store.add_subscriber("u@example.com", status="unsubscribed")
    store.add_subscriber("b@example.com", status="bounced")
    campaign, created = create_campaign(store, newsletter(), "post", now=NOW)
    assert created and campaign.status == "sending"
    assert store.delivery_counts(campaign.id)["pending"] == 5
    store.add_subscriber("late@example.com")
    again, created_again = create_campaign(store, newsletter(), "post")
    assert (again.id, created_again) == (campaign.id, False)
    assert sum(store.delivery_counts(campaign.id).values()) == 5
    assert Newsletter.from_json(store.campaign_content(campaign.id)) == newsletter()


def test_claim_skips_subscribers_no_longer_active(store: Store) -> None:
    subs = [store.add_subscriber(f"a{i}@example.com") for i in range(4)]
    campaign, _ = create_campaign(store, newsletter(), "post")
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    store.set_subscriber_status(subs[1].id, "unsubscribed")
    claims, skipped = store.claim_deliveries(campaign.id, 10)
    assert [c.email for c in claims] == ["a0@example.com", "a2@example.com", "a3@example.com"]
    assert skipped == 1
    assert store.delivery_counts(campaign.id)["sending"] == 3
    store.record_outcomes(
        [
            Outcome(claims[0].delivery_id, claims[0].subscriber_id, "sent", "250 ok"),
            Outcome(claims[1].delivery_id, claims[1].subscriber_id, "bounced", "550 5.1.1 no"),
            Outcome(claims[2].delivery_id, claims[2].subscriber_id, "retry", "451 later", tomorrow),
        ]
    )
    counts = store.delivery_counts(campaign.id)
    assert (counts["sent"], counts["bounced"], counts["pending"], counts["skipped"]) == (1, 1, 1, 1)
    assert store.get_subscriber(subs[2].id).status == "bounced"  # type: ignore[union-attr]
    assert store.next_retry_at(campaign.id) == tomorrow
    assert store.claim_deliveries(campaign.id, 10) == ([], 0)  # the retry is not due yet
    assert not store.finish_campaign(campaign.id)


@pytest.mark.usefixtures("each_ledger")
def test_lease_keeps_a_second_sender_out(store: Store) -> None:
    store.add_subscriber("a@example.com")
    campaign, _ = create_campaign(store, newsletter(), "post")
    me, other = store.new_lease_owner(), store.new_lease_owner()
    assert store.acquire_lease(campaign.id, me) is None
    assert store.acquire_lease(campaign.id, other) == me  # same live process, another sender
    store.release_lease(campaign.id, me)
    assert store.acquire_lease(campaign.id, other) is None


@pytest.mark.usefixtures("each_ledger")
def test_lease_of_a_dead_process_is_taken_over(store: Store) -> None:
    store.add_subscriber("a@example.com")
    campaign, _ = create_campaign(store, newsletter(), "post")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = store.new_lease_owner().split(":")[0]
    assert store.acquire_lease(campaign.id, f"{host}:{dead.pid}:deadbeef") is None
    assert store.acquire_lease(campaign.id, store.new_lease_owner()) is None
    # A holder on another machine is trusted until the lease expires.
    assert store.acquire_lease(campaign.id, "elsewhere:1:abc", now=datetime.now(UTC) + timedelta(hours=1)) is None
    assert store.acquire_lease(campaign.id, store.new_lease_owner()) == "elsewhere:1:abc"


def _at_once(settings: Settings, count: int, action: Callable[[Store, int], str | None]) -> list[str | None]:
    """``action(store, index)`` on ``count`` threads, each with its own connection, released together."""
    barrier = threading.Barrier(count)
    results: list[str | BaseException | None] = [RuntimeError("did not run")] * count

    def run(index: int) -> None:
        try:
            with Store.open(settings) as own:
                own.get_meta("warm-up")  # connected before the barrier: the actions start together
                barrier.wait(timeout=30)
                results[index] = action(own, index)
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(isinstance(r, BaseException) for r in results), results
    return results  # type: ignore[return-value]


@pytest.mark.usefixtures("each_ledger")
@pytest.mark.parametrize("previous", ["none", "dead"])
def test_senders_asking_at_once_get_one_lease(store: Store, settings: Settings, previous: str) -> None:
    """Free, or held by a dead process: of four senders asking at the same instant, one wins."""
    store.add_subscriber("a@example.com")
    host = store.new_lease_owner().split(":")[0]
    for trial in range(5):
        campaign, _ = create_campaign(store, newsletter(f"post-{trial}"), "post")
        if previous == "dead":
            dead = subprocess.Popen([sys.executable, "-c", "pass"])
            dead.wait()
            assert store.acquire_lease(campaign.id, f"{host}:{dead.pid}:deadbeef") is None
        owners = [store.new_lease_owner() for _ in range(4)]
        answers = _at_once(settings, 4, lambda own, i, c=campaign.id, o=owners: own.acquire_lease(c, o[i]))
        winners = [a for a in answers if a is None]
        assert len(winners) == 1, f"trial {trial}: {len(winners)} senders took the lease"
        holder = {a for a in answers if a is not None}
        assert len(holder) == 1 and holder <= set(owners)


@pytest.mark.usefixtures("each_ledger")
def test_scheduler_lock_is_held_renewed_released_and_taken_over_when_stale(store: Store) -> None:
    host = socket.gethostname()
    first = DatabaseLock(store, seconds=60)
    second = DatabaseLock(store, seconds=60)  # another scheduler in this (live) process
    assert first.acquire(now=NOW) is None and first.replaced is None
    holder = second.acquire(now=NOW)
    assert holder is not None and (holder.owner, holder.host, holder.pid) == (first.owner, host, os.getpid())
    # A live holder on this host keeps it even with an expired heartbeat: it is stuck, not gone.
    assert second.acquire(now=NOW + timedelta(hours=1)) is not None
    assert first.renew(now=NOW + timedelta(seconds=15))
    assert second.holder(now=NOW) == replace(
        holder, heartbeat_at=NOW + timedelta(seconds=15), expires_at=NOW + timedelta(seconds=75)
    )
    first.release()
    assert second.holder() is None
    assert second.acquire(now=NOW) is None
    assert not first.renew(now=NOW)  # no longer first's

    # Held by a process of this host that died: taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = DatabaseLock(store, seconds=60, owner=f"{host}:{dead.pid}:deadbeef")
    second.release()
    assert gone.acquire(now=NOW) is None
    assert second.acquire(now=NOW) is None
    assert second.replaced is not None and second.replaced.pid == dead.pid

    # Held on another machine: respected until its heartbeat expires, then taken over.
    second.release()
    elsewhere = DatabaseLock(store, seconds=60, owner="elsewhere.example:4242:abc")
    assert elsewhere.acquire(now=NOW) is None
    refused = first.acquire(now=NOW + timedelta(seconds=59))
    assert refused is not None and (refused.host, refused.pid) == ("elsewhere.example", 4242)
    assert first.acquire(now=NOW + timedelta(seconds=61)) is None
    assert first.replaced is not None and first.replaced.host == "elsewhere.example"
    assert not elsewhere.renew(now=NOW + timedelta(seconds=62))  # it must stop: the lock is gone


@pytest.mark.usefixtures("each_ledger")
@pytest.mark.parametrize("previous", ["none", "stale"])
def test_schedulers_starting_at_once_get_one_lock(store: Store, settings: Settings, previous: str) -> None:
    for trial in range(5):
        if previous == "stale":  # another machine's scheduler whose heartbeat stopped
            stale = DatabaseLock(store, seconds=1, owner=f"elsewhere.example:{trial}:abc")
            assert stale.acquire(now=datetime.now(UTC) - timedelta(seconds=5)) is None
        locks = [DatabaseLock(store, seconds=60) for _ in range(4)]
        answers = _at_once(
            settings, 4, lambda own, i, ls=locks: DatabaseLock(own, seconds=60, owner=ls[i].owner).acquire()
        )
        assert len([a for a in answers if a is None]) == 1, f"trial {trial}: more than one scheduler took the lock"
        winner = DatabaseLock(store, seconds=60).holder()
        assert winner is not None and winner.owner in {lock.owner for lock in locks}
        DatabaseLock(store, seconds=60, owner=winner.owner).release()


@pytest.mark.usefixtures("each_ledger")
def test_meta_written_by_several_processes_at_once(store: Store, settings: Settings) -> None:
    """First writer wins for setdefault (first_run_at), last for set (release markers); no
    writer fails. On PostgreSQL a read, then an insert, let two inserts collide."""
    for trial in range(5):
        first = _at_once(settings, 4, lambda own, i, t=trial: own.setdefault_meta(f"first-{t}", f"value-{i}"))
        assert len(set(first)) == 1 and first[0] == store.get_meta(f"first-{trial}")
        _at_once(settings, 4, lambda own, i, t=trial: own.set_meta(f"marker-{t}", f"value-{i}"))
        assert store.get_meta(f"marker-{trial}") in {f"value-{i}" for i in range(4)}


def test_iter_subscribers_pages_in_id_order(store: Store) -> None:
    emails = [f"r{i}@example.com" for i in range(7)]
    store.add_subscribers_bulk([{"email": e, "status": "active", "source": "t"} for e in emails])
    store.add_subscriber("x@example.com", status="bounced")
    assert [s.email for s in store.iter_subscribers(page=2)] == [*emails, "x@example.com"]
    assert [s.email for s in store.iter_subscribers("bounced", page=2)] == ["x@example.com"]
    assert store.count_subscribers()["active"] == 7


def test_forget_removes_deliveries_too(store: Store, tmp_path: Path) -> None:
    sub = store.add_subscriber("gone@example.com")
    campaign, _ = create_campaign(store, newsletter(), "post")
    assert store.delete_subscriber(sub.id)
    assert sum(store.delivery_counts(campaign.id).values()) == 0


def test_upgrade_from_the_schema_before_0003_keeps_every_row(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger made by every migration before 0003 upgrades in place: rows, ids,
    references and indexes kept; 'paused' and 'held' allowed; junk still refused."""
    names = [name for name, _ in migrations.MIGRATIONS]
    engine = make_engine(settings.database_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[: names.index("0003_delivery_safety")])
    migrations.migrate(engine)
    old = MetaData()
    migrations.define_v1(old)
    subscriber_rows = [
        {"id": i, "email": f"r{i}@example.com", "email_key": f"r{i}@example.com", "status": "active",
         "source": "t", "created_at": NOW, "updated_at": NOW}
        for i in (1, 2, 3)
    ]  # fmt: skip
    campaign_rows = [
        {"id": 7, "key": "old", "kind": "post", "subject": "S", "content": "{}", "status": "finished",
         "created_at": NOW, "finished_at": NOW},
        {"id": 9, "key": "current", "kind": "digest", "subject": "S", "content": "{}", "status": "sending",
         "created_at": NOW, "lease_owner": "host:1:x", "lease_expires_at": NOW},
    ]  # fmt: skip
    delivery_rows = [
        {"id": 1, "campaign_id": 7, "subscriber_id": 1, "status": "sent", "attempts": 1, "last_reply": "250 ok",
         "updated_at": NOW, "sent_at": NOW},
        {"id": 2, "campaign_id": 9, "subscriber_id": 1, "status": "sending", "attempts": 0, "updated_at": NOW},
        {"id": 5, "campaign_id": 9, "subscriber_id": 2, "status": "pending", "attempts": 2, "last_reply": "451 later",
         "next_attempt_at": NOW, "updated_at": NOW},
        {"id": 6, "campaign_id": 9, "subscriber_id": 3, "status": "bounced", "attempts": 1, "updated_at": NOW},
    ]  # fmt: skip
    with engine.begin() as conn:
        for table, rows in (
            ("subscribers", subscriber_rows),
            ("campaigns", campaign_rows),
            ("deliveries", delivery_rows),
        ):
            columns = old.tables[table].columns
            conn.execute(insert(old.tables[table]), [{c.name: row.get(c.name) for c in columns} for row in rows])
        before = {
            t: conn.execute(select(old.tables[t]).order_by(text("id"))).all() for t in ("campaigns", "deliveries")
        }
    monkeypatch.undo()

    assert migrations.migrate(engine) == names[names.index("0003_delivery_safety") :]
    with engine.connect() as conn:
        for table in ("campaigns", "deliveries"):
            columns = [c for c in old.tables[table].columns]
            assert conn.execute(select(*columns).order_by(text("id"))).all() == before[table]
        assert conn.execute(select(schema.campaigns.c.pause_reason)).scalars().all() == [None, None]
        assert set(conn.execute(select(schema.deliveries.c.interrupted)).scalars()) == {0}
        assert {i["name"] for i in inspect(conn).get_indexes("deliveries")} >= {
            "deliveries_by_status",
            "deliveries_by_subscriber",
        }
        assert {fk["referred_table"] for fk in inspect(conn).get_foreign_keys("deliveries")} == {
            "campaigns",
            "subscribers",
        }
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    store = Store(engine)
    try:
        assert store.requeue_in_flight(9) == (1, 0)  # the one left 'sending'
        store.pause_campaign(9, "because")
        assert store.get_campaign(9).pause_reason == "because"  # type: ignore[union-attr]
        new, _ = create_campaign(store, newsletter("new"), "post", now=NOW)
        assert new.id == 10 and store.delivery_counts(new.id)["pending"] == 3
        for table, row_id, values in (
            (schema.campaigns, 9, {"status": "archived"}),
            (schema.deliveries, 5, {"status": "lost"}),
            (schema.deliveries, 2, {"subscriber_id": 2}),  # one delivery per subscriber and campaign
        ):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(update(table).where(table.c.id == row_id).values(**values))
        with engine.begin() as conn:
            conn.execute(update(schema.deliveries).where(schema.deliveries.c.id == 5).values(status="held"))
            conn.execute(delete(schema.campaigns).where(schema.campaigns.c.id == 9))  # cascades
            assert conn.execute(select(schema.deliveries.c.id).order_by(text("id"))).scalars().all() == [1, 7, 8, 9]
    finally:
        store.close()


def test_the_send_loop_writes_times_as_the_ledger_does(store: Store) -> None:
    """The send loop runs its statements through the driver, without SQLAlchemy's
    parameter processing; a time must still be stored in the ledger's own format (on
    SQLite, text that sorts and compares), or "due" comparisons go wrong."""
    for i in range(2):
        store.add_subscriber(f"a{i}@example.com")
    campaign, _ = create_campaign(store, newsletter(), "post", now=NOW)
    later = NOW + timedelta(hours=1)
    with store.delivery_session() as session:
        first, second = session.record_and_claim(campaign.id, [], 10, NOW)[0]
        outcomes = [
            Outcome(first.delivery_id, first.subscriber_id, "sent", "250 ok"),
            Outcome(second.delivery_id, second.subscriber_id, "retry", "451 later", later),
        ]
        assert session.record_and_claim(campaign.id, outcomes, 10, NOW) == ([], 0)  # the retry is not due
    assert store.next_retry_at(campaign.id) == later
    with store.engine.connect() as conn:
        written = conn.exec_driver_sql("SELECT created_at FROM campaigns").scalar()
        rows = conn.exec_driver_sql("SELECT sent_at, updated_at, next_attempt_at FROM deliveries ORDER BY id").all()
    stored = [value for row in rows for value in row if value is not None]
    assert len(stored) == 4
    for value in stored:
        assert len(value) == len(written) and value[:10] == written[:10], (value, written)
    session_claims = store.claim_deliveries(campaign.id, 10, now=later)
    assert [c.delivery_id for c in session_claims[0]] == [second.delivery_id]
