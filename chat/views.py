"""The customer web page: a server-rendered shell around a plain-JavaScript client.

Everything the page does afterwards goes through the public contract (docs/protocol.md): JWT login
at ``POST /api/auth/token``, the customer REST API, and the session socket opened with a single-use
ticket. The view only hands the page the few tunables it needs and a strict Content Security
Policy, so the page is exactly what a mobile client does, in a browser (docs/customer-web.md).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


def _content_security_policy(request: HttpRequest) -> str:
    # Same-origin scripts, styles and sockets only: no inline script, so a message body that
    # somehow reached the DOM as markup could still not run. Browsers older than CSP 3 do not
    # let 'self' cover ws(s)://, hence the explicit socket origin.
    ws_scheme = "wss" if request.is_secure() else "ws"
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {ws_scheme}://{request.get_host()}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ]
    )


@require_safe
def customer_page(request: HttpRequest) -> HttpResponse:
    config = {
        "apiBase": "/api/",
        "wsBase": "/ws/",
        "maxMessageChars": settings.MAX_MESSAGE_CHARS,
        "historyDays": settings.HISTORY_DAYS,
    }
    response = render(request, "customer/index.html", {"config": config})
    response["Content-Security-Policy"] = _content_security_policy(request)
    response["Referrer-Policy"] = "same-origin"
    # The shell is tiny; never serve a stale one that points at old scripts.
    response["Cache-Control"] = "no-store"
    return response
