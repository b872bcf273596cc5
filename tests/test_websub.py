"""WebSub: every feed names the hub, and a release pings it (against a local receiver)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import feedparser
import pytest

from pipeline.config import load_settings
from pipeline.ledger.store import Store
from pipeline.schedule import jobs
from tests.conftest import make_project


class _Receiver(BaseHTTPRequestHandler):
    pings: list[dict[str, str]]

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        type(self).pings.append({k: v[0] for k, v in parse_qs(body).items()})
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def hub() -> Iterator[tuple[str, list[dict[str, str]]]]:
    pings: list[dict[str, str]] = []
    handler = type("Receiver", (_Receiver,), {"pings": pings})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub", pings
    server.shutdown()
    server.server_close()


def test_feeds_name_the_hub_and_a_release_pings_it_once_per_feed(
    tmp_path: Path, hub: tuple[str, list[dict[str, str]]]
) -> None:
    url, pings = hub
    project = make_project(tmp_path)
    config = project / "pipeline.toml"
    config.write_text(config.read_text().replace("[feed]\n", f'[feed]\nwebsub_hub = "{url}"\n', 1))
    now = datetime.now(UTC).replace(microsecond=0)
    (project / "posts" / "news.md").write_text(
        f"---\ntitle: News\ndate: {(now - timedelta(minutes=1)).isoformat()}\n---\nBody.\n"
    )
    settings = load_settings(config)
    with Store.open(settings) as store:
        store.first_run_at(now - timedelta(hours=1))
    jobs.release_job(str(config), "news")
    assert sorted(p["hub.url"] for p in pings) == [
        "https://jamesonprosthetics.com/atom.xml",
        "https://jamesonprosthetics.com/feed.json",
        "https://jamesonprosthetics.com/feed.xml",
    ]
    assert {p["hub.mode"] for p in pings} == {"publish"}
    for name in ("feed.xml", "atom.xml"):
        parsed = feedparser.parse((project / "out" / name).read_bytes())
        assert {"rel": "hub", "href": url} in [
            {"rel": link.get("rel"), "href": link.get("href")} for link in parsed.feed.links
        ]
    document = json.loads((project / "out" / "feed.json").read_bytes())
    assert document["hubs"] == [{"type": "WebSub", "url": url}]
    jobs.release_job(str(config), "news")  # released already: no second ping
    assert len(pings) == 3
