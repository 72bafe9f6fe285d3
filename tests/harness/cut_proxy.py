"""A TCP relay between the store and a real PostgreSQL server that can break a connection at
a COMMIT, the way a network or a server restart can, for `tests/test_store_lost_commit.py`.

`lose_answer()`: the next client message holding a COMMIT reaches the server, which commits,
but its answer never reaches the client, whose connection is then closed: the client cannot
know whether the transaction landed. `lose_commit()`: that message never reaches the server,
and the connection is closed on both sides (a server restart, a reset): the server rolls the
transaction back. `late_commit(after)`: that message is held back and reaches the server
`after` seconds later, after the client was cut; until then the session stays open inside
its transaction, holding its locks. The server's side of a cut connection otherwise stays
open until `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib

# the store's COMMIT, a simple query (a Query message: its type byte and length, 5 bytes,
# then the text)
COMMIT_PARSE = b"COMMIT\x00"
CUT_AFTER = 0.3  # seconds from the COMMIT to the client's connection closing


class CutProxy:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.target = host, port
        self.port = 0
        self.cuts = 0  # connections cut so far
        self.late_sent = False  # the held COMMIT has reached the server
        self._late_after = 0.0
        self._armed: str | None = None  # "answer" | "commit"
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._kept: list[asyncio.StreamWriter] = []  # server sides of cut connections

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._relay, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def lose_answer(self) -> None:
        self._armed = "answer"

    def lose_commit(self) -> None:
        self._armed = "commit"

    def late_commit(self, after: float) -> None:
        self._armed = "late"
        self._late_after = after

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in [*self._kept]:
            writer.close()
        self._kept.clear()

    async def _later(self, server_w: asyncio.StreamWriter, data: bytes) -> None:
        await asyncio.sleep(self._late_after)
        server_w.write(data)
        with contextlib.suppress(ConnectionError):
            await server_w.drain()
        self.late_sent = True

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.target)
        cut = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self._armed is not None and COMMIT_PARSE in data:
                    how, self._armed = self._armed, None
                    # what came before the COMMIT in the same read goes through as usual
                    at = data.index(COMMIT_PARSE) - 5
                    before, data = data[:at], data[at:]
                    server_w.write(before)
                    if how == "answer":
                        server_w.write(data)
                    elif how == "late":
                        late = asyncio.create_task(self._later(server_w, data))
                        self._tasks.add(late)
                    await server_w.drain()
                    cut.set()
                    self.cuts += 1
                    self._kept.append(server_w)
                    await asyncio.sleep(CUT_AFTER)
                    client_w.transport.abort()
                    if how == "commit":
                        server_w.transport.abort()  # gone both ways: the server rolls back
                    return
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if cut.is_set():
                    continue  # the answer is lost
                client_w.write(data)
                with contextlib.suppress(ConnectionError):
                    await client_w.drain()
            client_w.close()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
            if not cut.is_set():
                server_w.close()
