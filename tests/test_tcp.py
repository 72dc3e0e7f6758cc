"""TCP noise on a server: segments TCP answered and freed are marked benign (hidden unless
--all), with what they were; what is not the protocol working is not hidden."""

from __future__ import annotations

import pytest

from tests.helpers import Droptrace, MakeNetns, background, link, sh

pytestmark = pytest.mark.root

# Reads one request and closes: the connection is half-closed from the server's side.
_SERVER = """
import socket
l = socket.socket(); l.bind(("0.0.0.0", 8081)); l.listen(8)
print("listening", flush=True)
while True:
    s, _ = l.accept(); s.recv(100); s.close()
"""
# Keeps writing after the server closed: the server's kernel answers with a RST.
_CLIENT = """
import socket, time
s = socket.create_connection(("192.0.2.2", 8081), timeout=5)
s.send(b"request")
time.sleep(0.5)
for _ in range(3):
    try:
        s.send(b"data after close"); time.sleep(0.2)
    except OSError:
        break
"""


def test_data_after_close_on_a_server_is_tcp_answering_it_benign_and_hidden(
    netns: MakeNetns,
) -> None:
    client, server = netns("tcpc"), netns("tcps")
    link(client, server, "eth0", "eth0", "192.0.2.1/24", "192.0.2.2/24")
    for extra in ((), ("--all",)):
        with background(server, _SERVER) as srv:
            assert srv.stdout is not None and srv.stdout.readline().strip() == "listening"
            with Droptrace("--json", "--netns", server, "--duration", "4", *extra) as dt:
                sh("python3", "-c", _CLIENT, ns=client)
                res = dt.wait()
        drops = [e for e in res.events if e["dport"] == 8081]
        if not extra:
            assert drops == [], drops  # hidden, but counted
            assert "NOT_SPECIFIED" in res.stderr
            continue
        assert drops, res.stderr
        ev = drops[0]
        assert (ev["reason"], ev["location"], ev["category"]) == (
            "NOT_SPECIFIED",
            "tcp_v4_rcv",
            "tcp",
        )
        assert ev["benign"] is True
        assert ev["evidence"]["tcp"]["ListenOverflows"] == 0
        assert "a connection closing or closed here" in ev["explanation"]
        assert "the protocol working" in ev["explanation"]
