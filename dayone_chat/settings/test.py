"""Settings for the test suite: the same PostgreSQL and Redis code path, faster password hashing."""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
# Position frames at most once a second rather than every 5 s, so tests that follow the queue
# moving do not wait out the production interval; tests of the coalescing set their own.
QUEUE_POSITION_MIN_INTERVAL_MS = env_int("QUEUE_POSITION_MIN_INTERVAL_MS", 1000)  # noqa: F405
