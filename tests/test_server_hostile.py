"""Hostile clients of issue 38 against the server: slow-drip connections (no key, never a
whole request) cannot hold every slot or outlast the read deadline, /health stays
answerable, and the key is checked before a body is read."""

from __future__ import annotations

import json
import socket
import time

from server_helpers import (
    MESSAGES,
    Drip,
    TickingBackend,
    chat_url,
    get,
    post,
    split,
    timed,
    wait_until,
)

from sllmbo.inference.http_server import ChatServer, ServerLimits

KEY = "drip-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUICK = {"messages": MESSAGES, "max_tokens": 3}


def keyed(**limits) -> ChatServer:
    return ChatServer(TickingBackend(tick_s=0.001), model_name="m", port=0, api_key=KEY,
                      limits=ServerLimits(**limits))


def test_seventy_slow_drip_connections_do_not_delay_keyed_clients_or_health():
    # Issue 38: 70 sockets dripping a byte every 5 s held all 64 slots of the old server;
    # keyed requests were answered only when the drip stopped. Here, scaled to seconds.
    with keyed(read_timeout_s=4.0) as server, Drip(server.url, 70, every_s=0.5, for_s=6):
        # The first keyed request came 2 s in. In the first GRACE_S (0.5 s) every
        # dripper is new and spared, so a newcomer from their address would get 503.
        time.sleep(1.0)
        for _ in range(3):
            (status, _), took = timed(lambda: post(chat_url(server.url), QUICK, headers=AUTH,
                                                   timeout=15))
            assert status == 200 and took < 1.5, f"keyed request: {status} after {took:.1f} s"
            (status, _), took = timed(lambda: get(server.url.removesuffix("/v1") + "/health"))
            assert status == 200 and took < 1.5, f"/health: {status} after {took:.1f} s"
            time.sleep(1.0)


def test_a_request_dripped_within_each_read_timeout_is_still_cut_at_the_read_deadline():
    # The old server's timeout was per read: a byte every 0.3 s kept a 1 s timeout happy.
    with keyed(read_timeout_s=1.0) as server, Drip(server.url, 1, every_s=0.3,
                                                   for_s=4) as drip:
        pass
    [closed] = drip.closed_after
    assert closed is not None and closed < 2.5, f"closed after {closed} s"


def test_one_address_cannot_take_every_slot():
    with keyed(max_connections_per_client=8, read_timeout_s=30) as server, \
            Drip(server.url, 40, every_s=0.5, for_s=3):
        # Past the share, a newcomer closes an idle one (or, while all are new, is refused).
        assert wait_until(lambda: server.guard.evicted + server.guard.refused >= 32,
                          timeout_s=5)
        assert server.connections <= 8
        time.sleep(0.6)  # past the drippers' grace: the next newcomer makes room
        assert post(chat_url(server.url), QUICK, headers=AUTH)[0] == 200
        assert server.guard.evicted >= 1


def test_the_key_is_checked_before_the_body_is_read():
    with keyed(read_timeout_s=5.0) as server:
        host, port, path = split(chat_url(server.url))
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                          "\r\nContent-Length: 100000\r\n\r\n").encode())  # and no body
            reply, took = timed(lambda: _reply(sock))
        assert reply.startswith(b"HTTP/1.1 401") and took < 1, (reply[:80], took)
        body = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert "Unauthorized" in body["error"]["message"]


def test_a_drip_from_another_address_leaves_this_one_its_share():
    with keyed(max_connections_per_client=8, read_timeout_s=30) as server, \
            Drip(server.url, 40, every_s=0.5, for_s=3, source="127.0.0.2"):
        assert wait_until(lambda: server.guard.evicted + server.guard.refused >= 32,
                          timeout_s=5)
        for _ in range(3):  # at once, with no grace to wait out: 127.0.0.1 has its own share
            (status, _), took = timed(lambda: post(chat_url(server.url), QUICK, headers=AUTH))
            assert status == 200 and took < 1.5


def _reply(sock: socket.socket) -> bytes:
    """One whole answer (headers and its Content-Length of body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
            data.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
