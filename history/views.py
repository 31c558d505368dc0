"""The support leads' live dashboard (an admin page; its numbers come from /api/ops/queue)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from history.api.permissions import VIEW_QUEUE
from history.selectors import queue_overview


def _dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_QUEUE):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Live floor",
        # Drawn at once from the server; the page then polls every few seconds.
        "overview": queue_overview().as_wire(),
        "poll_ms": 3000,
        "history_hours": 6,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


# admin_view: the admin's login redirect for the anonymous and its staff check.
dashboard = admin.site.admin_view(_dashboard)
