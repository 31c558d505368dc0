"""``GET /healthz``: 200 only when the database, Redis and a Celery worker answer."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.proc import PYTHON, ROOT, project_env


@pytest.fixture
def isolated_broker(settings):
    """A Redis database number no worker listens on, so "no worker answers" is certain."""
    from dayone_chat.settings.env import celery_broker_url

    if settings.REDIS_URL.startswith("unix://"):  # embedded Redis: the db is a query parameter
        url = settings.REDIS_URL.split("?")[0] + "?db=13"
    else:
        url = settings.REDIS_URL.rsplit("/", 1)[0] + "/13"
    settings.CELERY_BROKER_URL = celery_broker_url(url)
    return url


@pytest.mark.django_db
def test_healthz_names_redis_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
    assert "redis" in response.json()["detail"]


@pytest.mark.django_db
def test_healthz_names_the_worker_when_no_worker_answers(client, isolated_broker):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["celery_worker"]


@pytest.mark.django_db
def test_healthz_is_ok_when_database_redis_and_a_worker_answer(client, isolated_broker):
    env = project_env(REDIS_URL=isolated_broker)
    worker = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "dayone_chat",
            "worker",
            "--pool=solo",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        response = client.get("/healthz")
        while response.status_code != 200 and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.5)
            response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
