"""Start the real system as subprocesses: N daphne servers, one Celery worker, one beat.

Every process gets the caller's environment (DATABASE_URL, REDIS_URL, CELERY_QUEUE,
CHANNEL_LAYER_PREFIX: so parallel test runs stay apart) plus ``DATABASE_NAME`` (the test
database, on the same server) and the tunables the test wants small. ``start`` returns once
every server answers ``GET /healthz`` with 200, which means the database, Redis and the worker
answer too. ``stop`` terminates them all (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ASGI_APP = "dayone_chat.asgi:application"
CELERY = [str(BIN / "celery"), "-A", "dayone_chat"]


class StackError(RuntimeError):
    pass


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; never 8000)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    ports: list[int]
    procs: list[Proc] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dayone-e2e-")))
    env: dict[str, str] = field(default_factory=dict)

    # --- life cycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        servers: int = 2,
        env: dict[str, str] | None = None,
        database_name: str | None = None,
        worker: bool = True,
        beat: bool = True,
        timeout: float = 90.0,
    ) -> Stack:
        stack = cls(ports=[free_port() for _ in range(servers)])
        stack.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dayone_chat.settings.test",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        if database_name:
            stack.env["DATABASE_NAME"] = database_name
        try:
            for index, port in enumerate(stack.ports):
                stack._spawn(
                    f"daphne{index}",
                    [
                        str(BIN / "daphne"),
                        "-b",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        # As the Procfile: daphne's 5 s default dropped sockets that queued
                        # behind others' connect work when hundreds arrived at once.
                        "--websocket_connect_timeout",
                        "30",
                        ASGI_APP,
                    ],
                    env={
                        # As the Procfile: the ASGI server pools its database connections.
                        "DB_POOL_MAX_SIZE": stack.env.get("DB_POOL_MAX_SIZE", "8"),
                        # Names its PostgreSQL sessions (pg_stat_activity.application_name).
                        "PGAPPNAME": stack.app_name(index),
                    },
                )
            if worker:
                stack._spawn(
                    "worker",
                    [
                        *CELERY,
                        "worker",
                        "--pool=solo",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "--loglevel=WARNING",
                        "-n",
                        f"e2e-{os.getpid()}-{stack.ports[0]}@%h",
                        "-Q",
                        stack.env.get("CELERY_QUEUE", "dayone"),
                    ],
                )
            if beat:
                stack._spawn(
                    "beat",
                    [*CELERY, "beat", "--loglevel=WARNING", "-s", str(stack.workdir / "beat")],
                )
            stack.wait_healthy(timeout=timeout)
        except BaseException:
            stack.stop()
            raise
        return stack

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group, so stop() reaches the children (Celery forks).
                start_new_session=True,
            )
        self.procs.append(Proc(name=name, popen=popen, log=log))

    def wait_healthy(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(range(len(self.ports)))
        last = ""
        while pending:
            for proc in self.procs:
                if proc.popen.poll() is not None:
                    raise StackError(f"{proc.name} exited early:\n{proc.tail()}")
            index = pending[0]
            try:
                answer = httpx.get(self.url(index, "/healthz"), timeout=3.0)
                last = f"{answer.status_code} {answer.text}"
                if answer.status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                detail = f"server {index} unhealthy after {timeout}s: {last}"
                raise StackError(detail + "\n" + self.logs())
            time.sleep(0.2)

    def stop(self, *, grace: float = 10.0) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)

    def kill_server(self, index: int) -> None:
        """SIGKILL one daphne (a crashed process: no goodbye to anyone)."""
        proc = self.procs[index]
        os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=5)

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(lines)}" for p in self.procs)

    # --- addresses ----------------------------------------------------------------------------

    def app_name(self, index: int) -> str:
        """The PostgreSQL application_name of server ``index``'s connections."""
        return f"dayone-e2e-daphne{index}-{self.ports[index]}"

    def url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def ws_url(self, index: int, path: str) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}{path}"

    # --- conveniences -------------------------------------------------------------------------

    def login(self, index: int, username: str, password: str) -> str:
        """An access token from ``POST /api/auth/token`` on server ``index``."""
        answer = httpx.post(
            self.url(index, "/api/auth/token"),
            json={"username": username, "password": password},
            timeout=10.0,
        )
        if answer.status_code != 200:
            raise StackError(f"login of {username} failed: {answer.status_code} {answer.text}")
        return str(answer.json()["access"])

    def api(self, index: int, token: str) -> httpx.Client:
        """An HTTP client for server ``index`` that sends the bearer token."""
        return httpx.Client(
            base_url=self.url(index, ""),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10.0,
        )

    async def alogin(self, index: int, username: str, password: str) -> str:
        """``login`` for async tests (does not block the event loop)."""
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.post(
                self.url(index, "/api/auth/token"),
                json={"username": username, "password": password},
            )
        if answer.status_code != 200:
            raise StackError(f"login of {username} failed: {answer.status_code} {answer.text}")
        return str(answer.json()["access"])

    def aapi(self, index: int, token: str | None = None) -> httpx.AsyncClient:
        """An async HTTP client for server ``index`` (with the bearer token, if given)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url(index, ""), headers=headers, timeout=10.0)
