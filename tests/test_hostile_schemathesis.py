"""schemathesis against /api/schema/ of a live daphne, authenticated as a customer and as an agent.

Checks: no 5xx, and every answer matches the schema (documented status code, content type and
body). Bounded: a few examples per operation (SCHEMATHESIS_MAX_EXAMPLES overrides it), one worker.
The customer has a live chat with the agent, so ids in the schema's examples can hit real rows;
random ids exercise the 404 paths.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command

from tests.e2e.fixtures import stack_fixture
from tests.e2e.stack import BIN

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

stack = stack_fixture(env={"PRESENCE_HEARTBEAT_S": "5"}, servers=1)

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def token(stack, username: str) -> str:
    answer = httpx.post(
        stack.url(0, "/api/auth/token"),
        json={"username": username, "password": "dayone"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["access"]


def run_schemathesis(stack, bearer: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    examples = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "8")
    return subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            stack.url(0, "/api/schema/"),
            "--header",
            f"Authorization: Bearer {bearer}",
            "--checks",
            CHECKS,
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            examples,
            "--workers",
            "1",
            "--seed",
            "20261123",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--no-color",
            "--report",
            "junit",
            "--report-junit-path",
            str(workdir / "junit.xml"),
        ],
        cwd=workdir,  # schemathesis keeps a cache in its working directory
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def people(stack):
    call_command("seed_demo", agents=1, customers=2, password="dayone", stdout=io.StringIO())
    return token(stack, "customer1"), token(stack, "agent1")


@pytest.mark.parametrize("who", ["customer", "agent"])
def test_api_answers_within_its_schema_and_never_5xx_when_fuzzed(stack, people, who, tmp_path):
    bearer = people[0] if who == "customer" else people[1]
    if who == "customer":
        # A live chat, so the customer's own calls have something to act on.
        created = httpx.post(
            stack.url(0, "/api/sessions"),
            json={"topic": "fuzzing"},
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
    done = run_schemathesis(stack, bearer, tmp_path)
    if os.environ.get("SCHEMATHESIS_OUTPUT"):
        Path(os.environ["SCHEMATHESIS_OUTPUT"]).write_text(done.stdout)
    summary = "\n".join(done.stdout.splitlines()[-60:])
    assert done.returncode == 0, f"{summary}\n{done.stderr[-2000:]}"
    assert "passed" in done.stdout.lower()
