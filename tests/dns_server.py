"""A real DNS server on 127.0.0.1 for the doctor --dns tests, served in-process with
dnspython's wire format (UDP, and TCP for answers too long for UDP).

It answers from a small zone given as {(name, type): [record text]}: names it does
not know get NXDOMAIN, a known name asked for another type gets an empty answer
(NOERROR, no records), and names listed in ``silent`` get no answer at all (a
resolver's timeout).
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = dict[tuple[str, str], list[str]]


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class Records:
    def __init__(self, zone: Zone, silent: set[str]) -> None:
        self.zone = {(_key(name), kind.upper()): values for (name, kind), values in zone.items()}
        self.names = {name for name, _kind in self.zone}
        self.silent = {_key(name) for name in silent}
        self.asked: list[tuple[str, str]] = []

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.asked.append((name, kind))
        if name in self.silent:
            return None
        values = self.zone.get((name, kind))
        if values:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 300, dns.rdataclass.IN, question.rdtype, values)
            )
        elif name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()


class _Udp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.records.answer(data)  # type: ignore[attr-defined]
        if reply is not None:
            if len(reply) > 512:  # too long for plain UDP: say so, the resolver retries over TCP
                message = dns.message.from_wire(reply)
                message.answer = []
                message.flags |= dns.flags.TC
                reply = message.to_wire()
            sock.sendto(reply, self.client_address)


class _Tcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        head = self.request.recv(2)
        if len(head) < 2:
            return
        (length,) = struct.unpack("!H", head)
        data = b""
        while len(data) < length:
            chunk = self.request.recv(length - len(data))
            if not chunk:
                return
            data += chunk
        reply = self.server.records.answer(data)  # type: ignore[attr-defined]
        if reply is not None:
            self.request.sendall(struct.pack("!H", len(reply)) + reply)


@contextmanager
def dns_server(zone: Zone, *, silent: set[str] | None = None) -> Iterator[tuple[str, Records]]:
    """Serve ``zone`` on 127.0.0.1 (one free port, UDP and TCP); yields ("127.0.0.1:PORT", records)."""
    records = Records(zone, silent or set())
    while True:  # the same port for UDP and TCP: take a free UDP one, retry if TCP has it
        udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _Udp)
        port = udp.server_address[1]
        try:
            tcp = socketserver.ThreadingTCPServer(("127.0.0.1", port), _Tcp)
        except OSError:
            udp.server_close()
            continue
        break
    for server in (udp, tcp):
        server.records = records  # type: ignore[attr-defined]
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"127.0.0.1:{port}", records
    finally:
        for server in (udp, tcp):
            server.shutdown()
            server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
