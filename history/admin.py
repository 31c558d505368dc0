"""Purge records, read-only (kept for compliance). Queue samples are seen on the dashboard."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from history.models import PurgeRecord


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(PurgeRecord)
class PurgeRecordAdmin(_ReadOnly):
    list_display = (
        "started_at",
        "dry_run",
        "cutoff",
        "sessions",
        "messages",
        "assignments",
        "accesses",
        "duration_s",
        "completed",
    )
    list_filter = ("dry_run", "started_at")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in PurgeRecord._meta.fields]

    @admin.display(boolean=True, description="completed")
    def completed(self, record: PurgeRecord) -> bool:
        return record.completed


admin.site.site_header = "DayOne Chat — support"
admin.site.site_title = "DayOne Chat support"
admin.site.index_title = "Sessions, agents and the floor"
