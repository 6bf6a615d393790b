"""realnet.node's bind, build and run, in process (the process-level tests are test_standalone)."""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from kvcore.runtime import Storage
from realnet import node
from realnet.runtime import open_storage
from realnet.settings import load_settings


def settings(*argv: str) -> node.Settings:
    return load_settings(node.build_parser().parse_args(list(argv)))


def test_bind_refuses_a_port_in_use_with_a_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert node.bind(settings("--port", "0", "--peer-port", str(port))) is None
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port} (peer port): address already in use." in err
        # the HTTP port fails after the peer port was bound: that one is closed again
        assert node.bind(settings("--port", str(port), "--peer-port", "0")) is None
        assert f"cannot listen on 127.0.0.1:{port} (HTTP port)" in capsys.readouterr().err


def test_bind_names_a_host_that_cannot_be_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    assert node.bind(settings("--host", "999.1.1.1", "--port", "0", "--peer-port", "0")) is None
    err = capsys.readouterr().err
    assert "cannot listen on 999.1.1.1:0" in err and "the host '999.1.1.1' cannot be resolved" in err, err


def test_serve_binds_builds_runs_and_stops_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    s = settings("--id", "solo", "--port", "0", "--peer-port", "0")

    async def main() -> tuple[int, node.Parts]:
        sockets = node.bind(s)
        assert sockets is not None and sockets.http_port and sockets.peer_port
        stop = asyncio.Event()
        parts = node.build(s, open_storage(None), sockets, stop)
        assert parts.node.id == "solo" and parts.addr == f"127.0.0.1:{sockets.http_port}"
        assert parts.http_server is None  # nothing runs before run()
        task = asyncio.create_task(node.run(s, parts, sockets))
        while parts.http_server is None:
            await asyncio.sleep(0.01)
        # the HTTP port answers
        reader, writer = await asyncio.open_connection("127.0.0.1", sockets.http_port)
        writer.write(b"GET /keys/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 404"), head
        stop.set()
        return await asyncio.wait_for(task, 10), parts

    status, parts = asyncio.run(main())
    assert status == node.EXIT_OK and not parts.node.running
    err = capsys.readouterr().err
    assert re.search(r"ready id=solo http=127\.0\.0\.1:\d+ peer=127\.0\.0\.1:\d+\n", err), err


def test_a_storage_that_fails_stops_the_node_and_its_waiting_clients_see_the_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A durable node whose fsync fails answers no write it could not make durable: it stops
    (status 1) and the client that waited sees its connection close, not a hang."""
    from realnet import kvlog

    s = settings("--id", "solo", "--port", "0", "--peer-port", "0", "--data-dir", str(tmp_path))
    s = replace(s, config=replace(s.config, durable=True))
    storage = kvlog.LogStorage(tmp_path)

    async def main() -> tuple[int, node.Parts, bytes]:
        sockets = node.bind(s)
        assert sockets is not None
        parts = node.build(s, storage, sockets, asyncio.Event())
        task = asyncio.create_task(node.run(s, parts, sockets))
        while parts.http_server is None:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", sockets.http_port)
        writer.write(b"PUT /kv/ok HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\n1")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 204")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)

        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(kvlog.os, "fsync", broken)
        writer.write(b"PUT /kv/lost HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\n2")
        rest = await asyncio.wait_for(reader.read(), 30)  # the connection closes, unanswered
        writer.close()
        return await asyncio.wait_for(task, 30), parts, rest

    status, parts, rest = asyncio.run(main())
    monkeypatch.undo()
    assert status == node.EXIT_STORAGE == 1
    assert b"204" not in rest and "Input/output error" in parts.storage_failed
    assert "stopping, so that a restart recovers from what is on disk" in caplog.text
    again = kvlog.LogStorage(tmp_path)
    assert again.get("kv:" + b"ok".hex()) == b"1"


def _refused_start(tmp_path: Path, capsys: pytest.CaptureFixture[str], node_id: str, key: str,
                   value: bytes) -> tuple[Storage, str]:
    """Serve a node whose storage holds ``key`` = ``value``: refused (exit 2); (storage, stderr)."""
    storage = open_storage(str(tmp_path))
    storage.put(key, value)
    storage.sync()
    s = settings("--id", node_id, "--port", "0", "--peer-port", "0", "--data-dir", str(tmp_path))
    assert asyncio.run(node.serve(s, storage)) == node.EXIT_CONFIG
    return storage, capsys.readouterr().err


def test_a_node_that_left_does_not_start_again_on_its_data_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A graceful leave marks the storage (membership.LEFT_KEY); started on it again, a node
    would come back a zombie (a replicated one campaigning for a group that removed it), so it
    refuses with a sentence, exit 2. A static member's configuration lists it: it rejoins."""
    from kvcore.membership import LEFT_KEY

    storage, err = _refused_start(tmp_path, capsys, "gone", LEFT_KEY, b"3")
    assert "Node 'gone' left its cluster" in err and "give it an empty --data-dir" in err, err
    assert storage.get(LEFT_KEY) == b"3"  # refused, nothing changed


def test_a_static_member_that_left_rejoins_and_its_mark_is_cleared(tmp_path: Path) -> None:
    from kvcore.membership import LEFT_KEY
    from tests.realnet.conftest import free_ports

    port, peer_port = free_ports(2)  # the one-member static cluster's two ports
    f = tmp_path / "c.toml"
    f.write_text(f'[cluster]\nepoch = 1\n[[cluster.nodes]]\nid = "s1"\naddr = "127.0.0.1:{port}"\n'
                 f'peer_addr = "127.0.0.1:{peer_port}"\nslots = "0-16383"\n')
    data = tmp_path / "data"
    data.mkdir()
    storage = open_storage(str(data))
    storage.put(LEFT_KEY, b"3")
    storage.sync()
    s = settings("--config", str(f), "--id", "s1", "--data-dir", str(data))
    assert s.cluster is not None
    stop = asyncio.Event()
    stop.set()  # start, then stop at once
    assert asyncio.run(node.serve(s, storage, stop)) == node.EXIT_OK
    assert storage.get(LEFT_KEY) is None


def test_a_member_of_a_group_whose_record_is_unreadable_does_not_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not as an unreplicated node, acknowledging writes outside its group: exit 2, a sentence."""
    from kvcore.node.node import GROUP_KEY

    _, err = _refused_start(tmp_path, capsys, "m", GROUP_KEY, b"{not json")
    assert "node m is a member of a replicated group, but its record of the group is unreadable" in err
    assert "does not start outside its group" in err and "Traceback" not in err


def test_a_raft_log_without_the_nodes_record_of_its_group_refuses_the_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """storage.log lost (or the data directory mixed up) while raft/ kept its log: started so,
    the member would serve as an unreplicated node outside its group (an audit's reverse case)."""
    (tmp_path / "raft").mkdir()
    (tmp_path / "raft" / "raft-0.log").write_bytes(b"SLRAFT1\n")
    storage = open_storage(str(tmp_path))
    s = settings("--id", "r", "--port", "0", "--peer-port", "0", "--data-dir", str(tmp_path))
    assert asyncio.run(node.serve(s, storage)) == node.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "holds a Raft log" in err and "raft-0.log" in err and "outside its group" in err, err
