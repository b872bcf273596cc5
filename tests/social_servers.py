"""Stand-ins for Mastodon and a Bluesky PDS on 127.0.0.1, named as stand-ins.

Neither real server installs here within CI's time: Mastodon needs Ruby, PostgreSQL and
Redis; Bluesky's reference PDS (npm @atproto/dev-env) took 676 s to download on this
machine before building better-sqlite3 from source. These follow the documented
behaviour of the endpoints the pipeline uses:

* Mastodon (docs.joinmastodon.org, "statuses", "instance", "media"): ``POST
  /api/v1/statuses`` with a Bearer token (401 without a valid one) and the
  ``Idempotency-Key`` header ("keys are valid for up to 1 hour"; the same key returns
  the first status); ``GET /api/v2/instance`` and ``/api/v1/instance`` with
  ``configuration.statuses.max_characters``; ``POST /api/v2/media``;
  ``verify_credentials`` and the account's statuses, newest first; 429 with
  ``Retry-After`` when told to.
* Bluesky PDS (lexicons com.atproto.*): ``server.createSession`` (401
  AuthenticationRequired on a bad password), ``identity.resolveHandle``,
  ``repo.uploadBlob`` (a blob over 1,000,000 bytes is refused only by the embed's
  lexicon; we record the size), ``repo.createRecord`` with ``rkey`` (a TID for
  ``app.bsky.feed.post``; an rkey in use is refused), ``repo.getRecord`` (400
  RecordNotFound when absent).

``faults`` is a list of (path prefix, status) answered once each, before the real work.
``on_created`` runs after a post is stored and before the answer is sent: a test uses
it to SIGKILL the client at the worst moment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import regex

TID = regex.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _fault(self, path: str) -> bool:
        with self.server.lock:
            for index, (prefix, status) in enumerate(self.server.faults):  # noqa: B007 (status is used after the loop)
                if path.startswith(prefix):
                    del self.server.faults[index]
                    break
            else:
                return False
        self.server.calls.append((self.command, path, status))
        self._answer(status, {"error": f"injected {status}"}, {"Retry-After": "0"} if status == 429 else None)
        return True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        if self._fault(parts.path):
            return
        self.server.calls.append((method, parts.path, 200))
        path = parts.path.rstrip("/") or "/"  # Rails routes take a trailing slash alike
        self.server.route(self, method, path, {k: v[0] for k, v in parse_qs(parts.query).items()})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.faults: list[tuple[str, int]] = []
        self.calls: list[tuple[str, str, int]] = []
        self.on_created: Callable[[], None] | None = None
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def route(self, handler: _Handler, method: str, path: str, query: dict[str, str]) -> None:
        raise NotImplementedError

    def created(self) -> None:
        if self.on_created is not None:
            self.on_created()


class MastodonStandIn(_Server):
    """A Mastodon server stand-in (see the module doc)."""

    IDEMPOTENCY_SECONDS = 3600

    def __init__(self, token: str = "mastodon-token", max_characters: int = 500) -> None:
        super().__init__()
        self.token = token
        self.max_characters = max_characters
        self.statuses: list[dict[str, Any]] = []  # oldest first
        self.keys: dict[str, tuple[float, dict[str, Any]]] = {}

    def route(self, handler: _Handler, method: str, path: str, query: dict[str, str]) -> None:
        if path in ("/api/v1/instance", "/api/v2/instance"):
            config = {"statuses": {"max_characters": self.max_characters, "max_media_attachments": 4}}
            handler._answer(200, {
                "uri": "127.0.0.1", "domain": "127.0.0.1", "title": "stand-in", "version": "4.3.0",
                "api_versions": {"mastodon": 2}, "configuration": config,
            })  # fmt: skip
            return
        if handler.headers.get("Authorization") != f"Bearer {self.token}":
            handler._body()
            handler._answer(401, {"error": "The access token is invalid"})
            return
        if path == "/api/v1/accounts/verify_credentials":
            handler._answer(200, {"id": "1", "username": "clinic", "acct": "clinic", "display_name": "Clinic"})
        elif path == "/api/v1/accounts/1/statuses":
            handler._answer(200, list(reversed(self.statuses))[: int(query.get("limit", "20"))])
        elif path == "/api/v2/media" and method == "POST":
            handler._body()
            handler._answer(200, {"id": str(100 + len(self.statuses)), "type": "image", "url": f"{self.url}/m.png"})
        elif path == "/api/v1/statuses" and method == "POST":
            self._post_status(handler)
        else:
            handler._answer(404, {"error": "Record not found"})

    def _post_status(self, handler: _Handler) -> None:
        raw = handler._body()
        if handler.headers.get("Content-Type", "").startswith("application/json"):
            form = json.loads(raw)
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        key = handler.headers.get("Idempotency-Key")
        with self.lock:
            if key and key in self.keys and time.time() - self.keys[key][0] < self.IDEMPOTENCY_SECONDS:
                handler._answer(200, self.keys[key][1])
                return
            text = str(form.get("status", ""))
            number = len(self.statuses) + 1
            status = {
                "id": str(number),
                "url": f"{self.url}/@clinic/{number}",
                "content": "<p>" + text.replace("&", "&amp;").replace("<", "&lt;") + "</p>",
                "text": text,
                "visibility": form.get("visibility", "public"),
                "created_at": "2026-11-27T12:00:00.000Z",
                "account": {"id": "1", "username": "clinic", "acct": "clinic"},
            }
            self.statuses.append(status)
            if key:
                self.keys[key] = (time.time(), status)
        self.created()
        handler._answer(200, status)


def _cid(data: bytes) -> str:
    """A CIDv1 (raw, sha2-256) in base32, as a PDS names a blob."""
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def _jwt(did: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{part({'alg': 'HS256', 'typ': 'at+jwt'})}.{part({'sub': did, 'iat': now, 'exp': now + 7200, 'scope': 'com.atproto.appPass'})}.c2ln"


class BlueskyPdsStandIn(_Server):
    """A Bluesky PDS stand-in (see the module doc)."""

    def __init__(self, handle: str = "clinic.test", password: str = "app-password") -> None:
        super().__init__()
        self.handle, self.password = handle, password
        self.did = "did:plc:clinicstandin000000000000"
        self.accounts = {handle: self.did, "friend.test": "did:plc:friendstandin00000000000"}
        self.records: dict[tuple[str, str], dict[str, Any]] = {}  # (collection, rkey) -> record
        self.blobs: dict[str, bytes] = {}

    def route(self, handler: _Handler, method: str, path: str, query: dict[str, str]) -> None:
        name = path.removeprefix("/xrpc/")
        if name == "com.atproto.server.createSession":
            body = json.loads(handler._body() or b"{}")
            if body.get("identifier") != self.handle or body.get("password") != self.password:
                handler._answer(401, {"error": "AuthenticationRequired", "message": "Invalid identifier or password"})
                return
            handler._answer(200, {
                "did": self.did, "handle": self.handle, "accessJwt": _jwt(self.did), "refreshJwt": _jwt(self.did),
                "active": True,
            })  # fmt: skip
        elif name == "com.atproto.identity.resolveHandle":
            did = self.accounts.get(query.get("handle", ""))
            if did is None:
                handler._answer(400, {"error": "InvalidRequest", "message": "Unable to resolve handle"})
            else:
                handler._answer(200, {"did": did})
        elif not handler.headers.get("Authorization", "").startswith("Bearer "):
            handler._body()
            handler._answer(401, {"error": "AuthenticationRequired", "message": "Authentication Required"})
        elif name == "com.atproto.repo.uploadBlob":
            data = handler._body()
            cid = _cid(data)
            self.blobs[cid] = data
            mime = handler.headers.get("Content-Type", "application/octet-stream")
            handler._answer(
                200, {"blob": {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": len(data)}}
            )
        elif name == "com.atproto.repo.createRecord":
            self._create(handler, json.loads(handler._body()))
        elif name == "com.atproto.repo.getRecord":
            record = self.records.get((query.get("collection", ""), query.get("rkey", "")))
            if record is None:
                handler._answer(400, {"error": "RecordNotFound", "message": "Could not locate record"})
            else:
                uri = f"at://{self.did}/{query['collection']}/{query['rkey']}"
                handler._answer(200, {"uri": uri, "cid": _cid(json.dumps(record).encode()), "value": record})
        else:
            handler._answer(501, {"error": "MethodNotImplemented"})

    def _create(self, handler: _Handler, body: dict[str, Any]) -> None:
        collection, rkey = body.get("collection", ""), body.get("rkey", "")
        if body.get("repo") not in (self.did, self.handle):
            handler._answer(400, {"error": "InvalidRequest", "message": "Invalid repo"})
            return
        if collection == "app.bsky.feed.post" and not TID.match(rkey):
            handler._answer(400, {"error": "InvalidRequest", "message": f"Invalid record key: {rkey}"})
            return
        with self.lock:
            if (collection, rkey) in self.records:
                handler._answer(400, {"error": "InvalidRequest", "message": "Record already exists"})
                return
            self.records[(collection, rkey)] = body["record"]
        self.created()
        uri = f"at://{self.did}/{collection}/{rkey}"
        handler._answer(200, {"uri": uri, "cid": _cid(json.dumps(body["record"]).encode())})
