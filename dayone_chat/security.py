"""A Content Security Policy for every HTML page that does not set its own (the admin, mostly).

The customer page and the console set strict policies themselves (chat.views, agents.views). The
admin renders message bodies (transcripts): Django escapes them, and this policy is the second
line: no script from anywhere but our origin, no plugins, no framing, no foreign form targets.
Styles may be inline (the admin's templates use style attributes). Exceptions, by path prefix:

* ``/admin/dashboard/`` keeps one inline script of its own, so inline scripts are allowed there
  (move it to static/ and the exception can go);
* ``/api/docs/`` is drf-spectacular's Swagger UI, which loads its scripts from a CDN.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

BASE = [
    "default-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
]
STRICT = "; ".join(
    [*BASE, "script-src 'self'", "style-src 'self' 'unsafe-inline'", "img-src 'self' data:"]
)
INLINE_SCRIPT = "; ".join(
    [
        *BASE,
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
    ]
)
SWAGGER = "; ".join(
    [
        *BASE,
        "script-src 'self' https://cdn.jsdelivr.net",
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net",
        "img-src 'self' data: https://cdn.jsdelivr.net",
    ]
)
EXCEPTIONS = (("/admin/dashboard/", INLINE_SCRIPT), ("/api/docs/", SWAGGER))


def policy_for(path: str) -> str:
    for prefix, policy in EXCEPTIONS:
        if path.startswith(prefix):
            return policy
    return STRICT


def _apply(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if "Content-Security-Policy" not in response and response.get("Content-Type", "").startswith(
        "text/html"
    ):
        response["Content-Security-Policy"] = policy_for(request.path)
    return response


@sync_and_async_middleware
def content_security_policy(
    get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]],
) -> Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]:
    # Both flavours, so that under ASGI an async view does not pay a thread hop for it.
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return _apply(request, await get_response(request))  # type: ignore[misc]

    else:

        def middleware(request: HttpRequest) -> HttpResponse:  # type: ignore[misc]
            return _apply(request, get_response(request))  # type: ignore[arg-type]

    return middleware
