"""Subscribers: validation, import (every row accounted for), export, the CLI."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from msgspec.structs import replace

from pipeline.cli.subscribers import subscribers_group
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.ledger.store import Store
from pipeline.ledger.subscribers import add_subscriber, export_csv, import_csv, normalise_address, remove_subscriber

MESSY = (
    "\ufeffEmail,Name,Phone\n"  # line 1: header (BOM, capitalised, an extra column)
    "ann@example.com,Ann Lee,555\n"  # 2
    "not-an-address,Bad Row,\n"  # 3
    "\n"  # 4: blank
    "BOB@Example.COM,Bob,\n"  # 5
    ',"Carol\nwith a newline",\n'  # 6-7: no address
    "dan@example,Dan,\n"  # 8: no dot in the domain
    "ann@EXAMPLE.com,Ann again,\n"  # 9: duplicate of line 2
    "eve@exämple.com,Eve,\n"  # 10: IDN domain, accepted
    "Frank <frank@example.com>,Frank,\n"  # 11: display name form
    "  gina@example.com  ,  Gina   Ray ,\n"  # 12: spaces trimmed
)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.open(settings)
    yield s
    s.close()


def write(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_normalise_address() -> None:
    assert normalise_address("  Ann@EXAMPLE.com ") == "Ann@example.com"
    assert normalise_address("eve@exämple.com") == "eve@xn--exmple-cua.com"
    for bad in ["", "   ", "ann", "ann@example", "a b@example.com", "Ann <ann@example.com>", "josé@example.com"]:
        with pytest.raises(PipelineError):
            normalise_address(bad)


def test_import_reports_every_rejected_row_with_its_line(store: Store, settings: Settings, tmp_path: Path) -> None:
    report = import_csv(store, settings, write(tmp_path, MESSY))
    rejected = {e.line or 0: e.message for e in report.rejected}
    assert sorted(rejected) == [3, 6, 8, 9, 11]
    assert "not a valid e-mail address" in rejected[3]
    assert "no address" in rejected[6]
    assert "line 2" in rejected[9]
    assert all(str(e).startswith(f"{tmp_path / 'list.csv'}:{e.line}: email: ") for e in report.rejected)
    assert report.added == 4
    assert report.ignored_columns == ["Phone"]
    # Nothing dropped silently: 10 data rows = 4 added + 5 rejected + the blank line.
    emails = sorted(s.email for s in store.iter_subscribers())
    assert emails == ["BOB@example.com", "ann@example.com", "eve@xn--exmple-cua.com", "gina@example.com"]
    assert store.get_subscriber_by_email("gina@example.com").name == "Gina Ray"  # type: ignore[union-attr]
    assert all(s.status == "active" and s.source == "import" for s in store.iter_subscribers())


def test_reimport_changes_nothing(store: Store, settings: Settings, tmp_path: Path) -> None:
    path = write(tmp_path, MESSY)
    import_csv(store, settings, path)
    before = list(store.iter_subscribers())
    again = import_csv(store, settings, path)
    assert again.changed == 0 and again.added == 0 and again.unchanged == 4
    assert list(store.iter_subscribers()) == before  # not even updated_at moved


def test_import_never_reactivates_an_unsubscribed_address(store: Store, settings: Settings, tmp_path: Path) -> None:
    gone = store.add_subscriber("gone@example.com", status="unsubscribed")
    bounced = store.add_subscriber("bounced@example.com", status="bounced")
    pending = store.add_subscriber("pending@example.com", status="pending")
    report = import_csv(
        store, settings, write(tmp_path, "email\ngone@example.com\nBOUNCED@example.com\npending@example.com\n")
    )
    assert store.get_subscriber(gone.id).status == "unsubscribed"  # type: ignore[union-attr]
    assert store.get_subscriber(bounced.id).status == "bounced"  # type: ignore[union-attr]
    assert [k.line for k in report.kept] == [2, 3]
    # Staff hold the consent for what they import: an unconfirmed address becomes active.
    assert store.get_subscriber(pending.id).status == "active"  # type: ignore[union-attr]
    assert report.activated == 1


def test_a_stranger_typing_an_unsubscribed_address_then_an_import_never_resubscribes_it(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    add_subscriber(store, settings, "ann@example.org")
    remove_subscriber(store, "ann@example.org")
    asked = add_subscriber(store, settings, "ann@example.org", confirm=True, source="web")  # anyone can do this
    assert asked.needs_confirmation
    report = import_csv(store, settings, write(tmp_path, "email,name\nann@example.org,Ann\n"))
    assert report.kept and "stays so" in str(report.kept[0])
    ann = store.get_subscriber_by_email("ann@example.org")
    assert ann is not None and ann.status == "unsubscribed"


def test_status_column_records_opt_outs(store: Store, settings: Settings, tmp_path: Path) -> None:
    active = store.add_subscriber("was-active@example.com")
    text = "email,status\nwas-active@example.com,unsubscribed\nnew@example.com,complained\nodd@example.com,vip\n"
    report = import_csv(store, settings, write(tmp_path, text))
    assert store.get_subscriber(active.id).status == "unsubscribed"  # type: ignore[union-attr]
    assert store.get_subscriber_by_email("new@example.com").status == "complained"  # type: ignore[union-attr]
    assert [(e.line, "unknown status" in e.message) for e in report.rejected] == [(4, True)]


def test_headerless_list_of_addresses(store: Store, settings: Settings, tmp_path: Path) -> None:
    report = import_csv(store, settings, write(tmp_path, "a@example.com,Ann\nb@example.com\n"))
    assert report.added == 2 and not report.rejected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,phone\nAnn,555\n", "no e-mail column"),
        (b"email\nann@example.com\n\xff\xfe@example.com\n", "not UTF-8"),
        (b"", "no rows"),
    ],
)
def test_unreadable_files_are_one_clear_error(
    store: Store, settings: Settings, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=message) as info:
        import_csv(store, settings, path)
    assert info.value.path == str(path)
    assert store.count_subscribers()["active"] == 0


def test_export_then_import_elsewhere_keeps_statuses(settings: Settings, tmp_path: Path) -> None:
    with Store.open(settings) as store:
        store.add_subscriber("a@example.com", '=HYPERLINK("http://evil")')
        store.add_subscriber("u@example.com", "Una", status="unsubscribed")
        store.add_subscriber("b@example.com", status="bounced")
        # A valid address can be a formula too (anyone can type it into the subscribe form).
        store.add_subscriber(normalise_address("=cmd|'/c.calc'!a0@example.com"), status="pending")
        assert export_csv(store, tmp_path / "out.csv") == 4
    exported = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert "'=HYPERLINK" in exported  # a spreadsheet shows it, does not run it
    cells = [cell for row in csv.reader(io.StringIO(exported)) for cell in row]
    assert "'=cmd|'/c.calc'!a0@example.com" in cells
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@"))]
    other = replace(settings, database=replace(settings.database, url=f"sqlite:///{tmp_path}/other.db"))
    with Store.open(other) as fresh:
        report = import_csv(fresh, other, tmp_path / "out.csv")
        assert report.added == 4 and not report.rejected and not report.ignored_columns
        statuses = {s.email: (s.status, s.name) for s in fresh.iter_subscribers()}
    assert statuses == {
        "a@example.com": ("active", '=HYPERLINK("http://evil")'),
        "u@example.com": ("unsubscribed", "Una"),
        "b@example.com": ("bounced", None),
        "=cmd|'/c.calc'!a0@example.com": ("pending", None),
    }


def test_add_and_remove(store: Store, settings: Settings) -> None:
    added = add_subscriber(store, settings, "New@Example.com", " New  Person ")
    assert (added.outcome, added.subscriber.status, added.subscriber.name) == ("added", "active", "New Person")
    assert add_subscriber(store, settings, "new@example.com").outcome == "already"
    removed = remove_subscriber(store, "NEW@example.com")
    assert removed.status == "unsubscribed"
    with pytest.raises(PipelineError, match="unsubscribed"):
        add_subscriber(store, settings, "new@example.com")
    again = add_subscriber(store, settings, "new@example.com", confirm=True)
    # Asking to come back sends a link; they stay unsubscribed until they click it.
    assert again.needs_confirmation and again.subscriber.status == "unsubscribed"
    with pytest.raises(PipelineError, match="not a subscriber"):
        remove_subscriber(store, "nobody@example.com")
    remove_subscriber(store, "new@example.com", forget=True)
    assert store.get_subscriber_by_email("new@example.com") is None


def test_cli(settings: Settings, tmp_path: Path) -> None:
    config = str(settings.root / "pipeline.toml")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(subscribers_group, [*args[:1], "--config", config, *args[1:]])
        return result.exit_code, result.stdout, result.stderr

    assert run("add", "ann@example.com", "--name", "Ann")[0] == 0
    code, out, err = run("add", "not an address")
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: email: ") and "Traceback" not in err
    code, out, err = run("import", str(write(tmp_path, MESSY)))
    assert code == 1
    assert f"rejected: {tmp_path / 'list.csv'}:3: email:" in err
    assert "3 added" in out and "5 rejected" in out  # ann was already there
    code, out, _ = run("count")
    assert code == 0 and "active" in out and "4" in out
    code, out, _ = run("list", "--status", "active")
    assert out.splitlines()[0].startswith("ann@example.com\tAnn\tactive\t")
    assert run("remove", "ann@example.com") == (0, "ann@example.com: unsubscribed\n", "")
    code, out, _ = run("export", str(tmp_path / "all.csv"))
    assert code == 0 and (tmp_path / "all.csv").read_text(encoding="utf-8").count("\n") == 5


# --- how often (issue 14) ------------------------------------------------------------------------

FREQUENCIES = (
    "email,name,frequency\n"  # line 1
    "ann@example.com,Ann,digest\n"  # 2
    "bob@example.com,Bob,weekly\n"  # 3: not a frequency
    "cy@example.com,Cy,\n"  # 4: empty: each article
    "dee@example.com,Dee, EACH \n"  # 5: spelled loosely
    "old@example.com,Old,digest\n"  # 6: already a subscriber: keeps their own choice
)


def test_import_reads_the_frequency_column_and_rejects_a_bad_value_by_line(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    store.add_subscriber("old@example.com", "Old")
    report = import_csv(store, settings, write(tmp_path, FREQUENCIES))
    assert [(e.line, e.field) for e in report.rejected] == [(3, "frequency")]
    assert str(report.rejected[0]) == (
        f"{tmp_path / 'list.csv'}:3: frequency: unknown frequency 'weekly' (known: each, digest); row not imported"
    )
    assert report.added == 3 and not report.ignored_columns
    chosen = {s.email: s.frequency for s in store.iter_subscribers()}
    assert chosen == {
        "old@example.com": "each",
        "ann@example.com": "digest",
        "cy@example.com": "each",
        "dee@example.com": "each",
    }
    assert store.get_subscriber_by_email("bob@example.com") is None
    # Export writes it; the same file imported elsewhere gives the same choices.
    assert export_csv(store, tmp_path / "out.csv") == 4
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8"))))
    assert {r["email"]: r["frequency"] for r in rows} == chosen


def test_cli_add_with_a_frequency_and_count_by_group(settings: Settings, tmp_path: Path) -> None:
    config = str(settings.root / "pipeline.toml")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(subscribers_group, [*args[:1], "--config", config, *args[1:]])
        return result.exit_code, result.stdout, result.stderr

    assert run("add", "ann@example.com", "--frequency", "digest") == (
        0,
        "ann@example.com: added (active, the weekly digest)\n",
        "",
    )
    assert run("add", "bob@example.com")[1] == "bob@example.com: added (active, each article)\n"
    # Staff change an existing subscriber's choice the same way; it is logged.
    assert run("add", "bob@example.com", "--frequency", "digest") == (
        0,
        "bob@example.com: now gets the weekly digest\n",
        "",
    )
    code, _out, err = run("add", "cy@example.com", "--frequency", "weekly")
    assert code == 2 and "'weekly' is not one of 'each', 'digest'" in err
    code, out, err = run("count")
    assert code == 0
    assert re.search(r"each article\s+0\s*\n", out) and re.search(r"the weekly digest\s+2\s*\n", out)
    assert "no weekly digest is scheduled" in err  # digest readers get each article until one is
    with Store.open(settings) as store:
        bob = store.get_subscriber_by_email("bob@example.com")
        assert bob is not None and [(o, n, v) for _at, o, n, v in store.frequency_history(bob.id)] == [
            ("each", "digest", "cli")
        ]
    code, out, err = run("import", str(write(tmp_path, FREQUENCIES)))
    assert code == 1 and f"rejected: {tmp_path / 'list.csv'}:3: frequency: unknown frequency 'weekly'" in err
