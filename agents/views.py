"""The agent console page: ``GET /console/`` (server-rendered shell, plain JS in static/console/).

Only a logged-in staff user with an agent profile gets the console; anyone else logged in gets a
page that says why (403), and anonymous visitors go to the login page first. Everything live
(status, offers, chats) then flows over ``/ws/agent/`` authenticated by the session cookie.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from agents.models import Agent

# Support leads may poll the live queue figures; agents see what ``agent.state`` tells them.
VIEW_QUEUE_PERMISSION = "history.view_queue"


def _content_security_policy(request: HttpRequest) -> str:
    # Same-origin scripts, styles and sockets only, no inline script: even if a message body
    # ever reached the DOM as markup it could not run. CSP 2 browsers need the socket origin.
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


def _secure(response: HttpResponse, request: HttpRequest) -> HttpResponse:
    response["Content-Security-Policy"] = _content_security_policy(request)
    response["Referrer-Policy"] = "same-origin"
    response["Cache-Control"] = "no-store"  # never a stale shell pointing at old scripts
    return response


@require_GET
@login_required
def console(request: HttpRequest) -> HttpResponse:
    user = request.user
    agent = Agent.objects.filter(user_id=user.pk).first() if user.is_staff else None
    if agent is None:
        reason = (
            "This account is not a staff account."
            if not user.is_staff
            else "This staff account has no agent profile."
        )
        refused = render(
            request,
            "console/refused.html",
            {"reason": reason, "can_admin": user.is_staff},
            status=403,
        )
        return _secure(refused, request)
    can_view_queue = user.has_perm(VIEW_QUEUE_PERMISSION)
    config = {
        "agent": {"display_name": agent.display_name, "capacity": agent.capacity},
        "username": user.get_username(),
        "ws_path": "/ws/agent/",
        "api": {
            "me": "/api/agent/me",
            # Leads' agents read the full overview; every agent may read the summary.
            "queue": "/api/ops/queue" if can_view_queue else "/api/agent/queue",
            "customers": "/api/agent/customers/",
        },
        "can_view_queue": True,  # every agent sees the queue summary (polled)
        "max_message_chars": settings.MAX_MESSAGE_CHARS,
        "offer_timeout_s": settings.OFFER_TIMEOUT_S,
        # The countdown of an offer uses the server's clock: the page learns the offset once.
        "server_now_ms": int(timezone.now().timestamp() * 1000),
    }
    page = render(
        request,
        "console/console.html",
        {"agent": agent, "config": config, "is_admin": user.is_staff},
    )
    return _secure(page, request)
