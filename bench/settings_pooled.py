"""A variant for A/B runs (``python -m bench.run --settings bench.settings_pooled``): what the
report proposes for the database connections of an ASGI server, measured before it is adopted.

Django keeps one connection per thread; under daphne every HTTP request runs in a new
single-use thread (asgiref's per-request ThreadSensitiveContext), so with CONN_MAX_AGE=60 each
request leaves a connection open until that thread is collected: a burst of logins or session
creations exhausts PostgreSQL's max_connections ("too many clients"). Django's documentation
advises CONN_MAX_AGE=0 under ASGI with a connection pool instead (psycopg's, Django >= 5.1).
"""

from bench.settings import *  # noqa: F403
from dayone_chat.settings.env import env_int

DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
DATABASES["default"]["OPTIONS"] = {  # noqa: F405
    **DATABASES["default"].get("OPTIONS", {}),  # noqa: F405
    "pool": {
        "min_size": 2,
        "max_size": env_int("DB_POOL_MAX", 16),
        "timeout": 10,
    },
}
