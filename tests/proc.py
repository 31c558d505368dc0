"""Running the project's own commands as real subprocesses in tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def project_env(**overrides: str | None) -> dict[str, str]:
    """The environment of this test run, pointed at the test database, with overrides
    (a value of None removes the variable)."""
    env = dict(os.environ)
    env["DATABASE_NAME"] = settings.DATABASES["default"]["NAME"]
    env.setdefault("DJANGO_SETTINGS_MODULE", "dayone_chat.settings.test")
    env["PYTHONPATH"] = str(ROOT)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def manage(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env or project_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
