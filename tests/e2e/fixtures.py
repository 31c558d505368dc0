"""Pytest glue for the e2e harness: a module-scoped stack on the test database.

    from tests.e2e.fixtures import stack_fixture
    stack = stack_fixture(env={"OFFER_TIMEOUT_S": "2"}, servers=2)

Tests that use it must be ``django_db(transaction=True)`` so that what they create is committed
and visible to the server processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.e2e.client import Transcript
from tests.e2e.stack import Stack


def stack_fixture(*, env: dict[str, str], servers: int = 2) -> Any:
    # Idle persistent connections of every server thread add up on a PostgreSQL shared by
    # parallel test runs; tests do not need them (a test may still ask for them in ``env``).
    env = {"DB_CONN_MAX_AGE": "0", **env}

    @pytest.fixture(scope="module")
    def stack(django_db_setup: None) -> Iterator[Stack]:
        running = Stack.start(
            servers=servers, env=env, database_name=connection.settings_dict["NAME"]
        )
        try:
            yield running
        finally:
            running.stop()

    return stack


def save_transcript(transcript: Transcript, name: str) -> Path | None:
    """Write a transcript where ``E2E_TRANSCRIPT_DIR`` says (docs/protocol.md quotes one)."""
    target = os.environ.get("E2E_TRANSCRIPT_DIR")
    if not target:
        return None
    path = Path(target) / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(transcript.render() + "\n")
    return path
