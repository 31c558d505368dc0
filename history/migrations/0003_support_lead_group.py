"""The "Support lead" group with exactly the permissions a lead needs (idempotent).

A frozen copy of history.services.SUPPORT_LEAD_PERMISSIONS as of this migration; the live list is
applied again after every migrate (history.apps) and by seed_demo, so later changes need no new
data migration.
"""

from django.db import migrations

SUPPORT_LEAD_GROUP = "Support lead"
SUPPORT_LEAD_PERMISSIONS = (
    ("chat", "view_chatsession"),
    ("chat", "view_message"),
    ("agents", "view_agent"),
    ("agents", "view_seat"),
    ("agents", "view_shift"),
    ("agents", "add_shift"),
    ("agents", "change_shift"),
    ("agents", "delete_shift"),
    ("agents", "view_customerdataaccess"),
    ("matching", "view_assignment"),
    ("history", "view_purgerecord"),
    ("history", "view_queue"),
    ("history", "intervene_session"),
    ("history", "force_agent_status"),
)


def create_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    using = schema_editor.connection.alias
    # Permissions are normally created after the whole migrate run (post_migrate); create the
    # ones this group needs now, from the historical models.
    for app_label in {app_label for app_label, _ in SUPPORT_LEAD_PERMISSIONS}:
        app_config = apps.get_app_config(app_label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permissions = [
        Permission.objects.using(using).get(content_type__app_label=app_label, codename=codename)
        for app_label, codename in SUPPORT_LEAD_PERMISSIONS
    ]
    group, _ = Group.objects.using(using).get_or_create(name=SUPPORT_LEAD_GROUP)
    group.permissions.set(permissions)


def remove_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name=SUPPORT_LEAD_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("chat", "0003_end_reason_cancelled"),
        ("agents", "0002_initial"),
        ("matching", "0001_initial"),
        ("history", "0002_queue_sample_and_purge_details"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
