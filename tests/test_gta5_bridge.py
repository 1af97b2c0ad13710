"""The mod bridge client against a fake mod over real TCP: handshake, calls, every failure."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pipeline.errors import GameError
from pipeline.games.gta5.bridge import PROTOCOL_VERSION, BridgeClient, BridgeVersionError
from tests.fake_mod import NPC_CONTROLS, FakeMod


@pytest.fixture
def mod() -> Iterator[FakeMod]:
    fake = FakeMod()
    yield fake
    fake.stop()


@pytest.fixture
def client(mod: FakeMod) -> Iterator[BridgeClient]:
    c = BridgeClient("127.0.0.1", mod.port, connect_timeout_s=2.0, reply_timeout_s=0.3, heartbeat_s=5.0)
    yield c
    c.close()


def test_handshake_then_commands(mod: FakeMod, client: BridgeClient) -> None:
    hello = client.connect()
    assert hello["protocol"] == PROTOCOL_VERSION and hello["mod"] == "FakeMod/1.0"
    assert mod.last("hello")["protocol"] == PROTOCOL_VERSION
    client.call("npc", enabled=True, style="calm")
    state = client.call("state")
    assert state["npc"] is True and state["controls"] == NPC_CONTROLS and state["speed"] == 12.5
    assert mod.last("npc") == {"id": 2, "cmd": "npc", "enabled": True, "style": "calm"}
    assert client.generation == 1


def test_first_call_connects_by_itself(mod: FakeMod, client: BridgeClient) -> None:
    assert not client.connected
    assert client.call("ping")["ok"] is True
    assert mod.commands() == ["hello", "ping"]


def test_version_mismatch_is_a_clear_error() -> None:
    newer = FakeMod(protocol=PROTOCOL_VERSION + 1)
    c = BridgeClient("127.0.0.1", newer.port, reply_timeout_s=0.5)
    try:
        with pytest.raises(BridgeVersionError, match="protocol"):
            c.call("state")
        assert not c.connected
        with pytest.raises(GameError):  # still an error on the next call, never a silent success
            c.call("state")
    finally:
        c.close()
        newer.stop()


def test_mod_refusal_is_an_error_but_keeps_the_connection(mod: FakeMod, client: BridgeClient) -> None:
    client.connect()
    with pytest.raises(GameError, match="unknown view"):
        client.call("camera", view="sideways")
    assert client.connected and client.call("camera", view="cinematic")["ok"]
    assert client.generation == 1


def test_malformed_line_raises_then_the_client_reconnects(mod: FakeMod, client: BridgeClient) -> None:
    client.connect()
    mod.fault("malformed")
    with pytest.raises(GameError, match="malformed"):
        client.call("state")
    assert not client.connected
    assert client.call("state")["ok"] is True
    assert client.generation == 2 and mod.connections == 2


@pytest.mark.parametrize(
    ("line", "match"),
    [(b"[1, 2]\n", "not a JSON object"), (b'{"id": 2, "speed": 1}\n', "no boolean 'ok'"),
     (b'{"id": 99, "ok": true}\n', "does not match"), (b"\xff\xfe\n", "malformed")],
)
def test_other_protocol_violations(mod: FakeMod, client: BridgeClient, line: bytes, match: str) -> None:
    client.connect()
    mod.fault("raw", line=line)
    with pytest.raises(GameError, match=match):
        client.call("state")
    assert client.call("ping")["ok"] is True


def test_overlong_line_is_rejected(mod: FakeMod) -> None:
    c = BridgeClient("127.0.0.1", mod.port, reply_timeout_s=1.0, max_line_bytes=1000)
    try:
        c.connect()
        mod.fault("raw", line=b'{"id": 2, "ok": true, "pad": "' + b"x" * 5000 + b'"}\n')
        with pytest.raises(GameError, match="exceeds"):
            c.call("state")
        assert c.call("state")["ok"] is True
    finally:
        c.close()


def test_slow_reply_times_out_and_the_late_reply_is_discarded(mod: FakeMod, client: BridgeClient) -> None:
    client.connect()
    mod.fault("delay", seconds=0.6)
    start = time.monotonic()
    with pytest.raises(GameError, match="no reply"):
        client.call("state")
    assert time.monotonic() - start < 0.6  # gave up before the mod answered
    assert client.connected  # one timeout keeps the connection
    reply = client.call("target", position=[1.0, 2.0], timeout_s=2.0)
    assert reply["target"] == [1.0, 2.0]  # the late 'state' reply was skipped by its id
    assert client.generation == 1


def test_two_timeouts_in_a_row_drop_the_connection(mod: FakeMod, client: BridgeClient) -> None:
    client.connect()
    mod.fault("delay", seconds=0.5)
    mod.fault("delay", seconds=0.5)
    for _ in range(2):
        with pytest.raises(GameError, match="no reply"):
            client.call("ping")
    assert not client.connected
    assert client.call("ping", timeout_s=2.0)["ok"] is True
    assert client.generation == 2


def test_disconnect_mid_call_is_retried_for_idempotent_commands(mod: FakeMod, client: BridgeClient) -> None:
    client.connect()
    mod.fault("drop")
    assert client.call("state")["ok"] is True  # transparently on a new connection
    assert client.generation == 2


def test_disconnect_during_teleport_is_reported_not_repeated(mod: FakeMod, client: BridgeClient) -> None:
    client.connect()
    mod.fault("drop")
    with pytest.raises(GameError, match="connection lost during 'teleport'"):
        client.call("teleport", fade=True)
    assert mod.commands().count("teleport") == 1
    assert client.call("teleport", fade=True)["ok"] is True


def test_mod_down_then_back() -> None:
    first = FakeMod()
    port = first.port
    c = BridgeClient("127.0.0.1", port, connect_timeout_s=0.5, reply_timeout_s=0.5)
    try:
        c.connect()
        first.stop()
        with pytest.raises(GameError):
            c.call("teleport")  # not retried: a clear error while the mod is gone
        with pytest.raises(GameError, match="cannot connect"):
            c.call("state")
        second = FakeMod(port=port)
        try:
            assert c.call("state")["ok"] is True
            assert c.generation == 2
        finally:
            second.stop()
    finally:
        c.close()


def test_heartbeat_pings_while_idle(mod: FakeMod) -> None:
    c = BridgeClient("127.0.0.1", mod.port, heartbeat_s=0.1)
    try:
        c.connect()
        deadline = time.monotonic() + 3.0
        while mod.commands().count("ping") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mod.commands().count("ping") >= 3
        assert c.call("state")["ok"] is True  # heartbeats never disturb the reply order
    finally:
        c.close()
    assert mod.commands()[-1] == "bye"
