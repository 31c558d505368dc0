"""Settings shared by every environment. Everything that differs comes from the environment."""

from __future__ import annotations

from pathlib import Path

from .env import (
    celery_broker_url,
    database_from_env,
    env_bool,
    env_int,
    env_list,
    env_str,
    redis_url_from_env,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-key-change-me-in-production-0123456789")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Browsers' WebSocket Origin must be one of these exactly (scheme://host[:port]); empty means "same
# host as the request", which is what the console and the customer page need.
WS_ALLOWED_ORIGINS = env_list("WS_ALLOWED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "chat",
    "agents",
    "matching",
    "history",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dayone_chat.static_files.StaticFilesMiddleware",  # WhiteNoise, async-capable
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dayone_chat.security.content_security_policy",  # pages without a policy of their own
]

ROOT_URLCONF = "dayone_chat.urls"
ASGI_APPLICATION = "dayone_chat.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_env()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = redis_url_from_env()
# redis-py's default pool allows only so many connections; several hundred sockets connecting at
# once exhausted it ("MaxConnectionsError"). channels-redis takes pool options per host.
CHANNEL_LAYER_POOL_SIZE = env_int("CHANNEL_LAYER_POOL_SIZE", 2000)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "dayone_chat.layers.DayOneChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "max_connections": CHANNEL_LAYER_POOL_SIZE}],
            "prefix": env_str("CHANNEL_LAYER_PREFIX", "dayone"),
            "capacity": 1000,
            "expiry": 60,
            "group_expiry": 86400,
        },
    },
}

CELERY_BROKER_URL = celery_broker_url(REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "dayone")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # collectstatic fills it; whitenoise wants it there
WHITENOISE_USE_FINDERS = True  # serve app static files without a collectstatic step
STATICFILES_DIRS = [BASE_DIR / "static"]
(BASE_DIR / "static").mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/admin/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only, as the contract says: bounded size and depth (docs/security.md), and no
    # multipart parsing for anyone to aim at.
    "DEFAULT_PARSER_CLASSES": ["dayone_chat.api.JSONParser"],
    "EXCEPTION_HANDLER": "dayone_chat.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "DayOne Chat API",
    "DESCRIPTION": "REST part of the DayOne Chat wire contract (docs/protocol.md).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
}
# DayOne's identity service: when its public key is configured, its RS256 tokens are accepted too.
DAYONE_JWT_PUBLIC_KEY = env_str("DAYONE_JWT_PUBLIC_KEY", "")
DAYONE_JWT_ISSUER = env_str("DAYONE_JWT_ISSUER", "")
DAYONE_JWT_AUDIENCE = env_str("DAYONE_JWT_AUDIENCE", "")

# DayOne customer data: "builtin" (local demo tables) or "http" (DayOne's services).
DAYONE_DATA_PROVIDER = env_str("DAYONE_DATA_PROVIDER", "builtin")
DAYONE_API_BASE_URL = env_str("DAYONE_API_BASE_URL", "")
DAYONE_API_TOKEN = env_str("DAYONE_API_TOKEN", "")
DAYONE_API_TIMEOUT_S = env_int("DAYONE_API_TIMEOUT_S", 3)

# --- Tunables of DESIGN.md -------------------------------------------------------------------
AGENT_CAPACITY = env_int("AGENT_CAPACITY", 2)
OFFER_TIMEOUT_S = env_int("OFFER_TIMEOUT_S", 20)
AUTO_ACCEPT = env_bool("AUTO_ACCEPT", False)
CUSTOMER_GRACE_S = env_int("CUSTOMER_GRACE_S", 120)
AGENT_GRACE_S = env_int("AGENT_GRACE_S", 300)
IDLE_CLOSE_S = env_int("IDLE_CLOSE_S", 900)
RESUME_KEEP_PLACE_S = env_int("RESUME_KEEP_PLACE_S", 600)
HISTORY_DAYS = env_int("HISTORY_DAYS", 14)
RETENTION_DAYS = env_int("RETENTION_DAYS", 90)
MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 4000)
MATCH_TICK_S = env_int("MATCH_TICK_S", 1)
# Socket hygiene (extensions of the contract, documented in docs/protocol.md).
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 16384)
WS_RATE_LIMIT_COUNT = env_int("WS_RATE_LIMIT_COUNT", 20)
WS_RATE_LIMIT_WINDOW_S = env_int("WS_RATE_LIMIT_WINDOW_S", 10)
WS_TICKET_TTL_S = 30
PRESENCE_HEARTBEAT_S = env_int("PRESENCE_HEARTBEAT_S", 15)
# A waiting customer's socket sends its position at most once per interval (the latest one).
QUEUE_POSITION_MIN_INTERVAL_MS = env_int("QUEUE_POSITION_MIN_INTERVAL_MS", 5000)
# Login lockout and REST throttles, counted in Redis (chat.api.ratelimit, docs/security.md).
AUTHENTICATION_BACKENDS = ["chat.api.ratelimit.LockoutModelBackend"]
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5)
LOGIN_LOCKOUT_S = env_int("LOGIN_LOCKOUT_S", 900)
SESSION_CREATE_RATE_COUNT = env_int("SESSION_CREATE_RATE_COUNT", 10)
SESSION_CREATE_RATE_WINDOW_S = env_int("SESSION_CREATE_RATE_WINDOW_S", 60)
MESSAGE_RATE_COUNT = env_int("MESSAGE_RATE_COUNT", 30)
MESSAGE_RATE_WINDOW_S = env_int("MESSAGE_RATE_WINDOW_S", 10)
# A REST request body (JSON) has at most this many bytes; a message is at most 16 KB of UTF-8.
REST_MAX_BODY_BYTES = env_int("REST_MAX_BODY_BYTES", 65536)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
