"""Configuration: external vs embedded servers, bad values stop start-up with one sentence."""

from __future__ import annotations

import json
import secrets

from tests.proc import PYTHON, ROOT, manage, project_env

PRINT_SETTINGS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "d = s.DATABASES['default']; "
    "print(json.dumps({'host': d['HOST'], 'name': d['NAME'], 'port': str(d['PORT']), "
    "'redis': s.REDIS_URL, 'broker': s.CELERY_BROKER_URL, "
    "'layer': s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]}))"
)


def _settings_of(env: dict[str, str]) -> dict:
    import subprocess

    done = subprocess.run(
        [PYTHON, "-c", PRINT_SETTINGS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_settings_use_the_external_servers_when_urls_are_set():
    env = project_env(
        DATABASE_URL="postgres://someone:pw@db.internal:6543/chatdb",
        DATABASE_NAME=None,
        REDIS_URL="redis://cache.internal:6380/4",
    )
    got = _settings_of(env)
    assert got["host"] == "db.internal"
    assert got["port"] == "6543"
    assert got["name"] == "chatdb"
    assert got["redis"] == "redis://cache.internal:6380/4"
    assert got["broker"] == "redis://cache.internal:6380/4"
    # The channel layer's pool is sized from settings (redis-py's default cap broke 400 sockets).
    assert got["layer"]["max_connections"] >= 1000


def test_startup_stops_with_one_sentence_when_database_url_is_unparsable():
    done = manage("check", env=project_env(DATABASE_URL="mysql://root@localhost/x"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "DATABASE_URL must point at PostgreSQL" in done.stderr


def test_startup_stops_with_one_sentence_when_a_tunable_is_not_a_number():
    done = manage("check", env=project_env(OFFER_TIMEOUT_S="soon"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "OFFER_TIMEOUT_S='soon' is not a whole number." in done.stderr


def test_production_settings_refuse_to_start_when_secret_key_is_missing():
    env = project_env(
        DJANGO_SETTINGS_MODULE="dayone_chat.settings.production",
        SECRET_KEY=None,
        ALLOWED_HOSTS="chat.example.com",
    )
    done = manage("check", env=env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "SECRET_KEY must be set in the environment." in done.stderr


def test_check_deploy_is_clean_when_production_settings_are_complete():
    env = project_env(
        DJANGO_SETTINGS_MODULE="dayone_chat.settings.production",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="chat.example.com",
    )
    done = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


PRINT_DB = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "d = s.DATABASES['default']; "
    "print(json.dumps({'age': d['CONN_MAX_AGE'], 'pool': d.get('OPTIONS', {}).get('pool')}))"
)


def _db_settings_of(env: dict[str, str]) -> dict:
    import subprocess

    done = subprocess.run(
        [PYTHON, "-c", PRINT_DB], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_connections_come_from_a_pool_when_db_pool_max_size_is_set():
    got = _db_settings_of(project_env(DB_POOL_MAX_SIZE="12", DB_CONN_MAX_AGE="60"))
    assert got == {"age": 0, "pool": {"min_size": 2, "max_size": 12, "timeout": 5}}


def test_connections_persist_without_a_pool_when_db_pool_max_size_is_unset():
    got = _db_settings_of(project_env(DB_POOL_MAX_SIZE=None, DB_CONN_MAX_AGE="60"))
    assert got == {"age": 60, "pool": None}
