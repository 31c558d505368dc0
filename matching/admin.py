"""The assignment log, read-only: every pairing the matcher made and what became of it."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from matching.models import Assignment


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = (
        "offered_at",
        "ticket",
        "customer",
        "agent",
        "seat",
        "enqueued_at",
        "free_since",
        "outcome",
        "accepted_at",
        "declined_at",
        "expired_at",
    )
    list_filter = ("outcome", "offered_at", "agent")
    search_fields = ("session__customer__username", "agent__display_name", "ticket__exact")
    search_help_text = "Customer username, agent name, or an exact ticket number."
    date_hierarchy = "offered_at"
    list_select_related = ("session__customer", "agent", "seat__agent")
    show_full_result_count = False
    fields = (
        "session",
        "ticket",
        "agent",
        "seat",
        "enqueued_at",
        "free_since",
        "offered_at",
        "accepted_at",
        "declined_at",
        "expired_at",
        "cancelled_at",
        "outcome",
    )
    readonly_fields = fields

    @admin.display(description="customer", ordering="session__customer__username")
    def customer(self, assignment: Assignment) -> str:
        return str(assignment.session.customer)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
