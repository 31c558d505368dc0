from django.db import migrations


class Migration(migrations.Migration):
    """The queue ticket: one PostgreSQL sequence, so arrival order is global and gap-tolerant."""

    dependencies = [("chat", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "CREATE SEQUENCE IF NOT EXISTS chat_queue_ticket AS bigint",
            "DROP SEQUENCE IF EXISTS chat_queue_ticket",
        ),
    ]
