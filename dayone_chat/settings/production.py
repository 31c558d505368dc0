"""Production: behind a TLS-terminating proxy. SECRET_KEY and ALLOWED_HOSTS must be given."""

from .base import *  # noqa: F403
from .env import ConfigurationError, env_bool, env_int, env_list, env_str

SECRET_KEY = env_str("SECRET_KEY")
if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("dev-only"):
    raise ConfigurationError("SECRET_KEY must be a random string of at least 50 characters.")
SIMPLE_JWT = {**SIMPLE_JWT, "SIGNING_KEY": SECRET_KEY}  # noqa: F405
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ConfigurationError("ALLOWED_HOSTS must name the host names this server answers to.")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
