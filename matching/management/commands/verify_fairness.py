"""``manage.py verify_fairness [--since ISO]``: re-check both fairness rules from the log."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from matching.models import Assignment
from matching.selectors import fairness_violations


def _parse_since(raw: str) -> datetime:
    moment = parse_datetime(raw)
    if moment is None:
        day = parse_date(raw)
        if day is None:
            raise CommandError(f"--since {raw!r} is not an ISO date or date-time.")
        moment = datetime.combine(day, time.min)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class Command(BaseCommand):
    help = (
        "List every assignment that broke a fairness rule (a customer served before an earlier "
        "waiting one; a seat used while an earlier-freed seat stood free). Prints the count "
        "last; exits 1 if there is any."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="only assignments offered at or after (ISO 8601)")

    def handle(self, *args: Any, since: str | None = None, **options: Any) -> None:
        moment = _parse_since(since) if since else None
        checked = Assignment.objects.filter(**({"offered_at__gte": moment} if moment else {}))
        violations = fairness_violations(since=moment)
        for v in violations:
            self.stdout.write(
                f"assignment {v.assignment_id} at {v.offered_at.isoformat()} [{v.rule}] {v.detail}"
            )
        self.stdout.write(f"checked {checked.count()} assignments")
        self.stdout.write(f"violations: {len(violations)}")
        if violations:
            raise SystemExit(1)
