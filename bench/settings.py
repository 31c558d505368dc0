"""Settings of the stack under benchmark: the project's own, with two deliberate differences.

- DEBUG is off, as in production (DEBUG keeps every SQL query in memory).
- Passwords hash with MD5: the benchmark logs 2,000 users in through ``POST /api/auth/token``,
  and PBKDF2 at Django's 1,000,000 iterations would spend minutes of the two cores on logins,
  which is not what this benchmark measures. Nothing else differs from ``dayone_chat.settings``.
"""

from dayone_chat.settings.base import *  # noqa: F403
from dayone_chat.settings.env import env_str

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "WARNING")},
}
