"""Support leads' view of agents (status, seats; force break / offline through the services),
the week's shift schedule, and the access log of customer data reads (read-only)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from agents import services
from agents.models import Agent, CustomerDataAccess, Seat, Shift
from chat.errors import DomainError
from chat.models import SEATED_STATUSES, ChatSession, Connection

FORCE_STATUS = "history.force_agent_status"


class ReadOnlyAdminMixin:
    """Logs and state owned by the services: leads look, nobody edits here."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class SeatInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Seat
    fields = ("index", "free_since", "holding")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="holding")
    def holding(self, seat: Seat) -> str:
        session = (
            ChatSession.objects.filter(seat=seat, status__in=SEATED_STATUSES)
            .select_related("customer")
            .first()
        )
        if session is None:
            return "free" if seat.free_since else "—"
        return f"{session.customer} ({session.status}, since {session.offered_at:%H:%M})"


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "display_name",
        "user",
        "status",
        "after_chats",
        "chats",
        "capacity",
        "console_open",
        "status_changed_at",
    )
    list_filter = ("status",)
    search_fields = ("display_name", "user__username")
    list_select_related = ("user",)
    ordering = ("display_name",)
    fields = (
        "user",
        "display_name",
        "status",
        "after_chats",
        "capacity",
        "status_changed_at",
        "disconnected_at",
    )
    readonly_fields = fields
    inlines = (SeatInline,)
    actions = ("force_break", "force_offline")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                seated=Count("sessions", filter=Q(sessions__status__in=SEATED_STATUSES)),
                console=Exists(Connection.objects.filter(agent=OuterRef("pk"))),
            )
        )

    @admin.display(description="chats", ordering="seated")
    def chats(self, agent: Agent) -> str:
        return f"{agent.seated} / {agent.capacity}"

    @admin.display(description="console", boolean=True, ordering="console")
    def console_open(self, agent: Agent) -> bool:
        return agent.console

    def has_force_status_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(FORCE_STATUS)

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[Agent],
        service: Callable[..., Agent],
        done: str,
    ) -> None:
        ok = 0
        for agent in queryset:
            try:
                service(agent=agent, lead=request.user)
            except DomainError as exc:
                self.message_user(request, f"{agent}: {exc.detail}", messages.ERROR)
            else:
                ok += 1
        if ok:
            self.message_user(request, f"{ok} agent(s) {done}.", messages.SUCCESS)

    @admin.action(
        permissions=["force_status"],
        description="Send on break (after their current chats)",
    )
    def force_break(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._apply(request, queryset, services.agent_force_break, "sent on break")

    @admin.action(
        permissions=["force_status"],
        description="Take offline now (their chats go back to the queue)",
    )
    def force_offline(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        self._apply(request, queryset, services.agent_force_offline, "taken offline")


# --- Shifts: the week's schedule -------------------------------------------------------------


class ShiftForm(forms.ModelForm):
    class Meta:
        model = Shift
        fields = ("agent", "scheduled_start", "scheduled_end")

    def clean(self) -> dict[str, object]:
        data = super().clean()
        start, end = data.get("scheduled_start"), data.get("scheduled_end")
        if start is None or end is None:
            raise forms.ValidationError("A scheduled shift needs a start and an end.")
        if end <= start:
            raise forms.ValidationError("The shift must end after it starts.")
        if end - start > timedelta(hours=16):
            raise forms.ValidationError("A shift lasts at most 16 hours.")
        return data


def _week_start(moment: datetime) -> datetime:
    local = timezone.localtime(moment)
    monday = local - timedelta(days=local.weekday())
    return monday.replace(hour=0, minute=0, second=0, microsecond=0)


class WeekFilter(admin.SimpleListFilter):
    title = "week"
    parameter_name = "week"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("last", "Last week"), ("this", "This week"), ("next", "Next week")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Shift]) -> QuerySet[Shift]:
        offsets = {"last": -1, "this": 0, "next": 1}
        if self.value() not in offsets:
            return queryset
        start = _week_start(timezone.now()) + timedelta(weeks=offsets[self.value()])
        return queryset.filter(
            scheduled_start__gte=start, scheduled_start__lt=start + timedelta(weeks=1)
        )


@admin.register(Shift)
class ShiftAdmin(admin.ModelAdmin):
    """Plain schedule data: the shift sweep ends a started shift at ``scheduled_end``, and
    ``agent_shift_start`` opens the scheduled shift that is due. Started/ended are the services'."""

    form = ShiftForm
    list_display = ("agent", "scheduled_start", "scheduled_end", "started_at", "ended_at")
    list_editable = ("scheduled_start", "scheduled_end")
    list_filter = (WeekFilter, "agent")
    list_select_related = ("agent",)
    date_hierarchy = "scheduled_start"
    ordering = ("scheduled_start", "agent__display_name")
    readonly_fields = ("started_at", "ended_at")
    actions = ("copy_to_next_week",)

    def get_changelist_form(self, request: HttpRequest, **kwargs: object) -> type[forms.Form]:
        kwargs.setdefault("form", ShiftForm)
        return super().get_changelist_form(request, **kwargs)

    def get_actions(self, request: HttpRequest) -> dict[str, object]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would not spare started shifts
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Shift | None = None) -> bool:
        # A shift that has started is a record of work done; only a planned one can go.
        if obj is not None and obj.started_at is not None:
            return False
        return super().has_delete_permission(request, obj)

    @admin.action(permissions=["add"], description="Copy the selected shifts to the next week")
    def copy_to_next_week(self, request: HttpRequest, queryset: QuerySet[Shift]) -> None:
        week = timedelta(weeks=1)
        made = 0
        for shift in queryset.filter(scheduled_start__isnull=False, scheduled_end__isnull=False):
            _, created = Shift.objects.get_or_create(
                agent_id=shift.agent_id,
                scheduled_start=shift.scheduled_start + week,
                defaults={"scheduled_end": shift.scheduled_end + week},
            )
            made += created
        self.message_user(request, f"{made} shift(s) planned for the next week.", messages.SUCCESS)


# --- The access log ------------------------------------------------------------------------


@admin.register(CustomerDataAccess)
class CustomerDataAccessAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "agent", "customer", "what", "session_link", "ok")
    list_filter = ("what", "ok", "at", "agent")
    search_fields = ("customer__username", "agent__display_name", "agent__user__username")
    search_help_text = "Customer username, agent name or agent username."
    date_hierarchy = "at"
    list_select_related = ("agent", "customer")
    show_full_result_count = False
    fields = ("at", "agent", "customer", "what", "session", "ok")
    readonly_fields = fields

    @admin.display(description="session")
    def session_link(self, access: CustomerDataAccess) -> str:
        return str(access.session_id)[:8] if access.session_id else "—"
