from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_support_lead_group(sender: AppConfig, using: str = "default", **_: object) -> None:
    # After every migrate (and after a test database flush, which re-sends post_migrate) the
    # group holds exactly the current list, even when the list changed after the data migration.
    from history.services import ensure_support_lead_group

    ensure_support_lead_group(using=using)


class HistoryConfig(AppConfig):
    name = "history"
    verbose_name = "History and retention"

    def ready(self) -> None:
        post_migrate.connect(
            _ensure_support_lead_group, sender=self, dispatch_uid="history.support_lead_group"
        )
