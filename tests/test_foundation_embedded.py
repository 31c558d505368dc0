"""The embedded PostgreSQL and Redis: started once, shared by processes, data kept across restarts.

These start real servers in a scratch ``var`` directory of their own, so they never touch the
servers of a developer's ``make run``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.proc import PYTHON, ROOT, project_env

# Each child: start-or-attach both servers, then report which server processes it got.
ATTACH = """
import json, redis
from dayone_chat import embedded
db = embedded.ensure_postgres()
url = embedded.ensure_redis()
pg_pid = int((embedded.postgres_dir() / "postmaster.pid").read_text().split()[0])
redis_pid = redis.Redis.from_url(url).info("server")["process_id"]
print(json.dumps({"pg_pid": pg_pid, "redis_pid": redis_pid, "host": db["HOST"], "redis": url}))
"""

# Through Django's own settings: DATABASE_URL/REDIS_URL unset means the embedded servers.
WRITE_AND_READ = """
import sys, django
django.setup()
from django.db import connection
import redis
from django.conf import settings
with connection.cursor() as c:
    c.execute("CREATE TABLE IF NOT EXISTS kept (v text)")
    if sys.argv[1] == "write":
        c.execute("INSERT INTO kept VALUES ('survives')")
    c.execute("SELECT v FROM kept")
    rows = [r[0] for r in c.fetchall()]
r = redis.Redis.from_url(settings.REDIS_URL)
if sys.argv[1] == "write":
    r.set("kept", "survives")
print(rows, r.get("kept"))
"""


@pytest.fixture
def scratch_var():
    # Under the project (not /tmp/pytest-of-root, which is 0700): as root, pgserver runs
    # PostgreSQL as its own system user, which must be able to reach the data directory.
    (ROOT / "var").mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="t-", dir=ROOT / "var"))
    path.chmod(0o755)
    env = project_env(
        DAYONE_VAR_DIR=str(path),
        DATABASE_URL=None,
        REDIS_URL=None,
        DATABASE_NAME=None,
        DJANGO_SETTINGS_MODULE="dayone_chat.settings.test",
    )
    yield path, env
    subprocess.run(
        [PYTHON, "-m", "dayone_chat.embedded", "stop"], cwd=ROOT, env=env, timeout=60, check=False
    )
    shutil.rmtree(path, ignore_errors=True)


def _spawn(env: dict[str, str], code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    return out.strip().splitlines()[-1]


def test_embedded_servers_start_once_when_two_processes_start_together(scratch_var):
    path, env = scratch_var
    first, second = _spawn(env, ATTACH), _spawn(env, ATTACH)
    a, b = json.loads(_result(first)), json.loads(_result(second))
    assert a["pg_pid"] == b["pg_pid"]
    assert a["redis_pid"] == b["redis_pid"]
    assert a["host"].startswith(str(path))
    assert a["redis"] == f"unix://{path}/redis/redis.sock"
    # A third process later attaches to the same running servers rather than starting new ones.
    c = json.loads(_result(_spawn(env, ATTACH)))
    assert (c["pg_pid"], c["redis_pid"]) == (a["pg_pid"], a["redis_pid"])


def test_embedded_data_survives_when_the_servers_are_stopped_and_started_again(scratch_var):
    _, env = scratch_var
    assert _result(_spawn(env, WRITE_AND_READ, "write")) == "['survives'] b'survives'"
    stop = subprocess.run(
        [PYTHON, "-m", "dayone_chat.embedded", "stop"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "redis, postgres" in stop.stdout
    assert _result(_spawn(env, WRITE_AND_READ, "read")) == "['survives'] b'survives'"
