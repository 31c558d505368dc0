"""Support leads' view of sessions: filters, search by customer, the transcript read-only, and
interventions (close, send back to the queue) that go through ``chat.services``.

Nothing here edits a session: the change page is read-only for everyone, and a status only
changes through the services, which lock, check the transition table and tell the sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.urls.resolvers import URLPattern
from django.views.decorators.http import require_POST

from chat import services
from chat.errors import DomainError
from chat.models import SEATED_STATUSES, ChatSession, Message, SessionStatus

INTERVENE = "history.intervene_session"
CLOSABLE = (*SEATED_STATUSES, SessionStatus.WAITING, SessionStatus.INCOMPLETE)


class TranscriptInline(admin.TabularInline):
    model = Message
    verbose_name = "message"
    verbose_name_plural = "transcript"
    fields = ("seq", "sender", "body", "created_at")
    readonly_fields = fields
    ordering = ("seq",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _apply(
    admin_obj: ChatSessionAdmin,
    request: HttpRequest,
    sessions: QuerySet[ChatSession] | list[ChatSession],
    service: Callable[..., ChatSession],
    done: str,
) -> None:
    """Call ``service`` once per session; report what worked and what the domain refused."""
    ok = 0
    for session in sessions:
        try:
            service(session_id=session.pk, lead=request.user)
        except DomainError as exc:
            admin_obj.message_user(
                request, f"{session.customer} ({session.status}): {exc.detail}", messages.ERROR
            )
        else:
            ok += 1
    if ok:
        admin_obj.message_user(request, f"{ok} session(s) {done}.", messages.SUCCESS)


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "customer",
        "status",
        "agent",
        "topic",
        "created_at",
        "ended_at",
        "end_reason",
        "message_count",
    )
    list_filter = ("status", "created_at", "agent", "end_reason")
    search_fields = ("customer__username", "customer__email", "topic")
    search_help_text = "Customer username or e-mail, or words of the topic."
    date_hierarchy = "created_at"
    list_select_related = ("customer", "agent")
    show_full_result_count = False  # one COUNT(*) over 90 days of sessions is enough
    list_per_page = 50
    ordering = ("-created_at",)
    actions = ("close_sessions", "requeue_sessions")
    inlines = (TranscriptInline,)
    fieldsets = (
        (None, {"fields": ("id", "customer", "status", "topic", "agent", "seat", "ticket")}),
        (
            "Times",
            {
                "fields": (
                    "created_at",
                    "enqueued_at",
                    "offered_at",
                    "offer_expires_at",
                    "accepted_at",
                    "incomplete_at",
                    "ended_at",
                    "end_reason",
                    "end_requested_by",
                    "customer_left_at",
                    "last_customer_activity_at",
                )
            },
        ),
    )
    readonly_fields = tuple(f for _, opts in fieldsets for f in opts["fields"])

    @admin.display(description="messages", ordering="last_seq")
    def message_count(self, obj: ChatSession) -> int:
        return obj.last_seq  # seq is contiguous per session: no count query per row

    @admin.display(description="session", ordering="id")
    def short_id(self, obj: ChatSession) -> str:
        return str(obj.pk)[:8]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # customers open sessions; a lead cannot open one for them

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # read-only for everyone: interventions are actions

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # only the retention purge deletes

    def has_intervene_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(INTERVENE)

    @admin.action(permissions=["intervene"], description="Close the selected sessions")
    def close_sessions(self, request: HttpRequest, queryset: QuerySet[ChatSession]) -> None:
        _apply(self, request, queryset, services.session_close_by_lead, "closed")

    @admin.action(
        permissions=["intervene"],
        description="Send the selected chats back to the queue (same place)",
    )
    def requeue_sessions(self, request: HttpRequest, queryset: QuerySet[ChatSession]) -> None:
        _apply(self, request, queryset, services.session_requeue_by_lead, "sent back to the queue")

    # --- buttons on the session's own page ----------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<uuid:session_id>/close/",
                wrap(require_POST(self.close_view)),
                name="chat_chatsession_close",
            ),
            path(
                "<uuid:session_id>/requeue/",
                wrap(require_POST(self.requeue_view)),
                name="chat_chatsession_requeue",
            ),
            *super().get_urls(),
        ]

    def _one(
        self, request: HttpRequest, session_id: UUID, service: Callable[..., ChatSession], done: str
    ) -> HttpResponseRedirect:
        if not self.has_intervene_permission(request):
            raise PermissionDenied
        session = get_object_or_404(ChatSession.objects.select_related("customer"), pk=session_id)
        _apply(self, request, [session], service, done)
        return HttpResponseRedirect(reverse("admin:chat_chatsession_change", args=[session.pk]))

    def close_view(self, request: HttpRequest, session_id: UUID) -> HttpResponseRedirect:
        return self._one(request, session_id, services.session_close_by_lead, "closed")

    def requeue_view(self, request: HttpRequest, session_id: UUID) -> HttpResponseRedirect:
        return self._one(
            request, session_id, services.session_requeue_by_lead, "sent back to the queue"
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, object] | None = None,
    ) -> HttpResponse:
        session = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if session is not None and self.has_intervene_permission(request):
            context["can_close"] = session.status in CLOSABLE
            context["can_requeue"] = session.status in SEATED_STATUSES
        return super().change_view(request, object_id, form_url, extra_context=context)
