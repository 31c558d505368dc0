"""Settings for the test suite: the same PostgreSQL and Redis code path, faster password hashing."""

from .base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
