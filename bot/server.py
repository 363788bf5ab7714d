"""The daemon's HTTP server: limits and timeouts.

aiohttp's server bounds a request's size but not its time, nor the number of connections:
its one timer (`keepalive_timeout`, an hour by default) starts at connect and again after each
response, and it accepts until the process runs out of file descriptors. Then every accept
fails with EMFILE, a delivery from Meta waits in the kernel's backlog until Meta gives up,
and asyncio logs the failure 128 times a try (issue 11: 1,100 idle sockets against `ulimit -n`
1024 silenced `/healthz` and wrote 192 MB of log in 22 s).

So every connection of every server the process runs goes through one `ConnectionGuard`:

- a request head must be complete within `listen.header_timeout_seconds` of connecting, its
  body within `listen.body_timeout_seconds` of the head, and an idle keep-alive connection's
  next head within `listen.idle_timeout_seconds`; past that the connection is closed;
- at most `listen.max_connections` are open, and never more than the open-file limit leaves
  room for once the reserve below is kept. At the cap a new connection closes the one that has
  been waiting longest for a request (a slow or idle one), never one whose handler is at work.
  Meta opens a connection and sends its delivery at once, so its request is the newest and is
  served; a connection is refused outright only when every open one is at work.

What the guard adds is a thin protocol in front of aiohttp's own (which still parses and
answers everything) and a wrapper around the server's request handler that says when a head
has arrived and when its handler is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Awaitable, Callable
from enum import StrEnum

from aiohttp import web
from aiohttp.streams import StreamReader

from bot.config import ListenLimits
from bot.errors import ConfigError
from bot.metrics import Metrics

__all__ = ["ConnectionGuard", "GuardedSite", "connection_cap", "make_runner", "plan_cap"]

log = logging.getLogger(__name__)

# Kept out of the connection cap, besides the files open when the guard is made (the two
# SQLite files with their WAL and shm, the log, the listening socket: 19 in all at start):
GRAPH_POOL = 100  # aiohttp's ClientSession allows 100 connections to the Graph API at once
# asyncio accepts up to `backlog` sockets in one loop turn before the guard counts any; and
# the sockets evicted for them are closed a turn later. Twice the backlog covers both (with
# one backlog of room, bench/idle.py still saw accepts fail with EMFILE).
BACKLOG = 128
SLACK = 16  # a flow reload's open files, DNS, a sqlite temp file
MIN_CONNECTIONS = 16

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Phase(StrEnum):
    """Where a connection is; the value names the timeout that closes it there."""

    HEAD = "header_timeout"  # connected, waiting for the first request head
    BODY = "body_timeout"  # head in, body still arriving
    WORK = "work"  # the handler has the whole request: never timed out or evicted
    IDLE = "idle_timeout"  # answered, kept alive, waiting for the next head


def _open_files() -> int | None:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return None


def plan_cap(wanted: int, soft: int, hard: int, open_now: int) -> tuple[int, int, int]:
    """(the soft open-file limit to ask for, the connection cap, the reserve); pure.

    The soft limit is raised toward what is needed when the hard limit allows (as Go's
    runtime does at start): `ulimit -n` is often 1024 while the hard limit is far higher.
    """
    reserve = open_now + GRAPH_POOL + 2 * BACKLOG + SLACK
    if soft == resource.RLIM_INFINITY:
        return soft, wanted, reserve
    need = wanted + reserve
    if soft < need:
        soft = need if hard == resource.RLIM_INFINITY else max(soft, min(need, hard))
    return soft, min(wanted, soft - reserve), reserve


def connection_cap(wanted: int) -> int:
    """`wanted`, or what the open-file limit leaves once the reserve is kept."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target, room, reserve = plan_cap(wanted, soft, hard, _open_files() or 32)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            target, room, reserve = plan_cap(wanted, soft, soft, _open_files() or 32)
    soft = target
    if room < MIN_CONNECTIONS:
        raise ConfigError(
            f"the open-file limit (ulimit -n) is {soft}, and {reserve} of it is kept for the"
            " database files, the Graph API client and the listening socket's backlog:"
            f" raise it to at least {reserve + MIN_CONNECTIONS}"
        )
    if room < wanted:
        log.warning(
            "listen.max_connections is %d, but the open-file limit (%d) less the %d kept for"
            " the database, the Graph API client and the accept backlog leaves room for %d"
            " connections: raise `ulimit -n` for more",
            wanted,
            soft,
            reserve,
            room,
        )
    return room


def make_runner(
    app: web.Application, limits: ListenLimits, *, shutdown_timeout: float = 10.0
) -> web.AppRunner:
    """aiohttp's own keep-alive timer agrees with the guard's (it would close after an hour)."""
    return web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=limits.idle_timeout,
    )


class _Connection(asyncio.Protocol):
    """One accepted socket: aiohttp's protocol behind it, and its one deadline."""

    __slots__ = (
        "guard",
        "inner",
        "transport",
        "phase",
        "timer",
        "request_no",
        "admitted",
        "closed_by",
        "silent",
    )

    def __init__(self, guard: ConnectionGuard, inner: web.RequestHandler) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.phase = Phase.HEAD
        self.timer: asyncio.TimerHandle | None = None
        self.request_no = 0
        self.admitted = False
        self.closed_by: str | None = None  # the guard's reason, when the guard closed it
        self.silent = True  # nothing received since it began to wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.admitted:
            transport.close()
            return
        self.inner.connection_made(transport)
        self.guard.wait_for_head(self, self.guard.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            if self.silent:
                self.guard.stirred(self)
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.admitted:
            self.inner.eof_received()  # aiohttp's keeps nothing open: the transport closes
        return None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.admitted = False
            self.inner.connection_lost(exc)

    def expire(self) -> None:
        self.timer = None
        self.guard.close(self, self.phase.value)


class ConnectionGuard:
    """Caps and times the connections of every server in this process (see the module doc)."""

    def __init__(
        self, limits: ListenLimits, *, metrics: Metrics | None = None, cap: int | None = None
    ) -> None:
        self.limits = limits
        self.cap = connection_cap(limits.max_connections) if cap is None else cap
        self._metrics = metrics
        self._open: dict[_Connection, None] = {}
        # Evictable, longest waiting first: those that sent nothing since they began to wait
        # go before those with part of a request in (a delivery sends its request at once).
        self._silent: dict[_Connection, None] = {}
        self._stirring: dict[_Connection, None] = {}
        self._by_handler: dict[web.RequestHandler, _Connection] = {}
        if metrics is not None:
            metrics.gauge("http_connections", lambda: len(self._open), "open HTTP connections")
            metrics.gauge("http_connection_cap", lambda: self.cap, "most HTTP connections open")

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def waiting(self) -> int:
        """Open and not at work: the ones the cap may close."""
        return len(self._silent) + len(self._stirring)

    async def listen(self, runner: web.BaseRunner, host: str, port: int) -> int:
        """Serve `runner` on host:port through the guard; the port it bound."""
        site = GuardedSite(runner, host, port, self)
        await site.start()
        return site.port

    # --- what a connection asks of the guard -------------------------------------------------

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        if getattr(server.request_handler, "__guard__", None) is not self:
            server.request_handler = self._watch(server.request_handler)

        def accepted() -> asyncio.Protocol:
            # Admitted here, a loop turn before connection_made, so an evicted socket is
            # closed a turn sooner: what is accepted but not yet counted stays under BACKLOG.
            conn = _Connection(self, server())
            conn.admitted = self.admit(conn)
            return conn

        return accepted

    def admit(self, conn: _Connection) -> bool:
        if len(self._open) >= self.cap:
            victim = next(iter(self._silent), None) or next(iter(self._stirring), None)
            if victim is None:
                self._count("refused")
                log.warning(
                    "connection limit (%d) reached with every connection at work:"
                    " refused a new one",
                    self.cap,
                )
                return False
            self.close(victim, "evicted")
            log.warning(
                "connection limit (%d) reached: closed the connection that waited longest"
                " for a request, to admit a new one",
                self.cap,
            )
        self._open[conn] = None
        # Waiting from now, though its socket is not made yet: asyncio accepts a burst of
        # them in one turn, and at the cap each must be able to close an older one.
        self._silent[conn] = None
        self._by_handler[conn.inner] = conn
        return True

    def wait_for_head(self, conn: _Connection, seconds: float) -> None:
        self._arm(conn, Phase.HEAD, seconds)

    def stirred(self, conn: _Connection) -> None:
        """Its first bytes since it began to wait: evicted only after the silent ones."""
        conn.silent = False
        if conn in self._silent:
            del self._silent[conn]
            self._stirring[conn] = None

    def close(self, conn: _Connection, reason: str) -> None:
        """Close one connection now, as the guard's decision (a timeout or the cap)."""
        if conn not in self._open:
            return
        self._drop(conn)
        self._count(reason)
        conn.closed_by = reason
        if conn.transport is not None:
            conn.transport.close()
        else:  # accepted in this same turn: connection_made closes it
            conn.admitted = False

    def forget(self, conn: _Connection) -> None:
        self._drop(conn)
        self._by_handler.pop(conn.inner, None)

    # --- internals -------------------------------------------------------------------------------

    def _drop(self, conn: _Connection) -> None:
        self._open.pop(conn, None)
        self._silent.pop(conn, None)
        self._stirring.pop(conn, None)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _arm(self, conn: _Connection, phase: Phase, seconds: float | None) -> None:
        conn.phase = phase
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._silent.pop(conn, None)
        self._stirring.pop(conn, None)
        conn.silent = phase in (Phase.HEAD, Phase.IDLE)
        if phase is not Phase.WORK and seconds is not None:
            # To the end: it waits from now.
            (self._silent if conn.silent else self._stirring)[conn] = None
            conn.timer = asyncio.get_running_loop().call_later(seconds, conn.expire)

    def _count(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.inc(
                "http_connections_closed",
                reason=reason,
                help="connections the server closed: timeouts and the connection cap",
            )

    def _watch(self, handler: Handler) -> Handler:
        async def guarded(request: web.BaseRequest) -> web.StreamResponse:
            conn = self._by_handler.get(request.protocol)
            if conn is None or conn not in self._open:
                return await handler(request)
            self._started(conn, request.content)
            try:
                return await handler(request)
            except ConnectionResetError:
                if conn.closed_by is None:
                    raise
                # The guard closed it (a body timeout, the cap) while the handler read the
                # body: no error of the handler's to log with a traceback. Nobody reads this.
                return web.Response(status=408, text=f"closed: {conn.closed_by}")
            finally:
                if conn in self._open:
                    self._arm(conn, Phase.IDLE, self.limits.idle_timeout)

        guarded.__guard__ = self  # type: ignore[attr-defined]
        return guarded

    def _started(self, conn: _Connection, body: StreamReader) -> None:
        conn.request_no += 1
        if body.is_eof():
            self._arm(conn, Phase.WORK, None)
            return
        self._arm(conn, Phase.BODY, self.limits.body_timeout)
        number = conn.request_no

        def arrived() -> None:
            if conn.request_no == number and conn.phase is Phase.BODY and conn in self._open:
                self._arm(conn, Phase.WORK, None)

        body.on_eof(arrived)


class GuardedSite(web.BaseSite):
    """aiohttp's TCPSite, with every accepted socket handed to the guard first."""

    __slots__ = ("_guard", "_host", "_port", "_bound")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._guard = guard
        self._host = host
        self._port = port
        self._bound = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._bound}"

    @property
    def port(self) -> int:
        return self._bound

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = created = await loop.create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        if created.sockets:
            self._bound = int(created.sockets[0].getsockname()[1])
