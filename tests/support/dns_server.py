"""A DNS server on 127.0.0.1 (UDP) that answers TXT queries from a dict, for doctor's DKIM
record check. Names it does not hold get NXDOMAIN; other types get an empty answer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@contextmanager
def dns_server(txt: dict[str, list[list[bytes]]]) -> Iterator[str]:
    """Serve ``txt`` (name → records, each a list of character-strings); yield ``IP:PORT``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            answer = dns.message.make_response(query)
            answer.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            if name not in txt:
                answer.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                texts = [
                    " ".join('"' + s.decode().replace('"', '\\"') + '"' for s in record)
                    for record in txt[name]
                ]
                answer.answer.append(
                    dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, "TXT", *texts)
                )
            sock.sendto(answer.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        sock.close()
