"""Reading the environment: one clear sentence for a bad value, never a traceback."""

from __future__ import annotations

import os


class ConfigurationError(SystemExit):
    """Raised at start-up for a bad configuration; SystemExit prints only the sentence."""

    def __init__(self, sentence: str) -> None:
        super().__init__(f"DayOne Chat configuration error: {sentence}")


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigurationError(f"{name} must be set in the environment.")
        return default
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a whole number.") from None
    if value < 0:
        raise ConfigurationError(f"{name}={raw!r} must not be negative.")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_env() -> dict[str, object]:
    """``DATABASE_URL`` when set (PostgreSQL only), else the embedded server under ``var/``."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        from dayone_chat import embedded

        config: dict[str, object] = dict(embedded.ensure_postgres())
    else:
        import dj_database_url

        try:
            config = dict(dj_database_url.parse(url))
        except Exception as exc:  # dj-database-url raises several types for a malformed URL
            raise ConfigurationError(f"DATABASE_URL could not be parsed ({exc}).") from None
        if config.get("ENGINE") != "django.db.backends.postgresql":
            raise ConfigurationError(
                "DATABASE_URL must point at PostgreSQL (postgres://user:password@host:port/name)."
            )
        if not config.get("NAME"):
            raise ConfigurationError("DATABASE_URL names no database (postgres://host:port/NAME).")
    config["ENGINE"] = "django.db.backends.postgresql"
    # Lets a child process (an end-to-end test's daphne or worker) use another database on the
    # same server, e.g. the test database, without rebuilding the URL.
    if os.environ.get("DATABASE_NAME"):
        config["NAME"] = os.environ["DATABASE_NAME"]
    pool_max = env_int("DB_POOL_MAX_SIZE", 0)
    if pool_max > 0:
        # psycopg's pool (dayone_chat/asgi.py turns it on for the ASGI server): Django keeps a
        # connection per thread, and daphne runs each request in a fresh thread, so persistent
        # connections pile up there until PostgreSQL refuses more ("too many clients").
        # A pool and persistent connections exclude each other.
        config["CONN_MAX_AGE"] = 0
        options = dict(config.get("OPTIONS") or {})  # type: ignore[call-overload]
        options["pool"] = {
            "min_size": min(2, pool_max),
            "max_size": pool_max,
            "timeout": env_int("DB_POOL_TIMEOUT_S", 5),
        }
        config["OPTIONS"] = options
    else:
        config["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
        config["CONN_HEALTH_CHECKS"] = True
    config["ATOMIC_REQUESTS"] = False
    return config


def redis_url_from_env() -> str:
    """``REDIS_URL`` when set, else the embedded Redis (a unix socket under ``var/``)."""
    url = os.environ.get("REDIS_URL", "").strip()
    if not url:
        from dayone_chat import embedded

        return embedded.ensure_redis()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"REDIS_URL={url!r} must start with redis://, rediss:// or unix://."
        )
    return url


def celery_broker_url(url: str) -> str:
    """kombu spells a unix-socket Redis ``redis+socket://``."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url
