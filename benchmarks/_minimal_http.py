"""The baseline for HTTP throughput: the least an asyncio server can do and still speak HTTP/1.1.

Theory of operation: one ``asyncio.Protocol`` per connection; bytes are appended to a buffer and
every complete request is answered with the same fixed ``200 OK`` (small body, keep-alive). The
only parsing is finding the request boundary: the blank line that ends the head and, when the head
carries a ``Content-Length`` field (PUT benchmarks), skipping that many body bytes. Nothing is
validated, no ``Request`` object is built, no handler is called: whatever a real server spends on
top of this is the price of correctness, which ``http_throughput.py`` reports as a ratio.

Run it as ``python benchmarks/_minimal_http.py PORT [HOST [uvloop]]`` (``uvloop``: on libuv's
event loop, the baseline for a node run with ``--event-loop uvloop``); it prints ``ready`` once
listening and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Length: 2\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"ok"
)


def _content_length(head: bytes) -> int:
    """Body length declared in ``head`` (0 when absent); the only header this server reads."""
    i = head.find(b"\r\nContent-Length:")
    if i < 0:
        i = head.find(b"\r\ncontent-length:")
        if i < 0:
            return 0
    start = i + 17
    end = head.find(b"\r\n", start)
    return int(head[start:] if end < 0 else head[start:end])


class MinimalHttp(asyncio.Protocol):
    """Answers every complete request on the connection with :data:`RESPONSE`."""

    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's are not its subclasses)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        answers = 0
        pos = 0
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            body_end = end + 4 + _content_length(buf[pos:end])
            if body_end > len(buf):
                break
            pos = body_end
            answers += 1
        self._buf = buf[pos:]
        if answers and self._transport is not None:
            self._transport.write(RESPONSE * answers)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MinimalHttp, host, port, backlog=1024)
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    print("ready", flush=True)
    try:
        await stop
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4) or (len(argv) == 4 and argv[3] != "uvloop"):
        print("usage: python benchmarks/_minimal_http.py PORT [HOST [uvloop]]", file=sys.stderr)
        return 2
    host = argv[2] if len(argv) >= 3 else "127.0.0.1"
    factory = None
    if len(argv) == 4:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(host, int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
