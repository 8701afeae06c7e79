"""A loopback TCP proxy in front of a live server, which can cut connections: the network
failures a client must survive (an answer lost after the request was handled, an event
stream dropped mid-way), made on purpose and on cue."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable

# Given the connection's number (0 for the first) and every byte the server has answered on
# it so far: how many of those bytes to pass on before closing the connection, or None to
# pass everything on.
CutRule = Callable[[int, bytes], int | None]


def never(_connection: int, _answered: bytes) -> int | None:
    return None


class TcpProxy:
    """Forwards each connection to `127.0.0.1:target_port` byte for byte, until `cut` says
    to close it (both sides: the client sees the connection drop, the server its reader
    go). `requests[n]` is everything connection n sent to the server, `answers[n]`
    everything the server answered on it (passed on or not)."""

    def __init__(self, target_port: int, cut: CutRule = never) -> None:
        self.target_port = target_port
        self.cut = cut
        self.requests: list[bytearray] = []
        self.answers: list[bytearray] = []
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return len(self.requests)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def idempotency_keys(self) -> list[str]:
        """The Idempotency-Key of each request that carried one, in order."""
        found = []
        for sent in self.requests:
            found += re.findall(rb"(?im)^idempotency-key:\s*(\S+)\r$", bytes(sent))
        return [key.decode() for key in found]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        number = len(self.requests)
        sent, answered = bytearray(), bytearray()
        self.requests.append(sent)
        self.answers.append(answered)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        upstream = asyncio.create_task(self._forward_requests(reader, up_writer, sent))
        downstream = asyncio.create_task(self._forward_answers(number, up_reader, writer, answered))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in (upstream, downstream):
                pipe.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            for end in (writer, up_writer):
                end.close()
                with contextlib.suppress(Exception):
                    await end.wait_closed()
            self._tasks.discard(task)

    async def _forward_requests(
        self, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter, sent: bytearray
    ) -> None:
        while data := await reader.read(65536):
            sent += data
            up_writer.write(data)
            await up_writer.drain()

    async def _forward_answers(
        self,
        number: int,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        answered: bytearray,
    ) -> None:
        passed = 0
        while data := await up_reader.read(65536):
            answered += data
            cut_at = self.cut(number, bytes(answered))
            if cut_at is not None:
                writer.write(bytes(answered[passed : max(passed, cut_at)]))
                await writer.drain()
                self.cuts += 1
                return
            writer.write(data)
            passed = len(answered)
            await writer.drain()


def after_first_message(answered: bytes) -> int | None:
    """The end of the first complete SSE message (with data) of an event stream's answer,
    or None while there is none yet."""
    head_end = answered.find(b"\r\n\r\n")
    if head_end < 0 or b"text/event-stream" not in answered[:head_end].lower():
        return None
    data_at = answered.find(b"data:", head_end)
    if data_at < 0:
        return None
    ends = [answered.find(end, data_at) for end in (b"\n\n", b"\n\r\n")]
    found = [(at, end) for at, end in zip(ends, (2, 3), strict=True) if at >= 0]
    if not found:
        return None
    at, length = min(found)
    return at + length


@contextlib.asynccontextmanager
async def proxy(target_port: int, cut: CutRule = never) -> AsyncIterator[TcpProxy]:
    running = await TcpProxy(target_port, cut).start()
    try:
        yield running
    finally:
        await running.stop()
