"""Settings of the Channels floor: the project's Redis, its own layer prefix, nothing else."""

from dayone_chat.settings.env import env_str, redis_url_from_env

SECRET_KEY = "bench-floor-only"  # noqa: S105 - no session, cookie or token is ever signed here
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
ASGI_APPLICATION = "bench.floor_channels.asgi.application"
USE_TZ = True

REDIS_URL = redis_url_from_env()
CHANNEL_LAYERS = {
    "default": {
        # The same backend and options as dayone_chat.settings.base, another prefix.
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "max_connections": 2000}],
            "prefix": env_str("CHANNEL_LAYER_PREFIX", "dayone") + "_floor",
            "capacity": 1000,
            "expiry": 60,
            "group_expiry": 86400,
        },
    },
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
}
