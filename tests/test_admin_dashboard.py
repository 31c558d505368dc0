"""The live dashboard page in admin, and the Support lead group behind every admin permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command

from agents.models import AgentStatus
from history.services import (
    SUPPORT_LEAD_GROUP,
    SUPPORT_LEAD_PERMISSIONS,
    ensure_support_lead_group,
)
from tests import history_builders as build
from tests.factories import SessionFactory, available_agent
from tests.test_admin_sessions import active_session

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"


def test_dashboard_shows_the_floor_when_a_lead_opens_it(client):
    active_session()
    SessionFactory()
    build.agent(status=AgentStatus.ON_BREAK)
    client.force_login(build.lead())
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    initial = response.context["overview"]
    assert initial["waiting"] == 1
    assert initial["sessions_active"] == 1
    assert initial["agents"]["on_break"] == 1
    text = response.text
    assert 'id="floor-initial"' in text  # the numbers the script starts from
    assert 'data-queue-url="/api/ops/queue"' in text
    assert 'data-history-url="/api/ops/queue/history"' in text
    assert 'id="chart-waiting"' in text
    assert 'id="chart-wait"' in text
    assert "cdn" not in text.lower()  # everything is served from here: no internet on the floor


def test_dashboard_poll_endpoint_answers_the_page_session_when_the_script_polls(client):
    client.force_login(build.lead())
    client.get(DASHBOARD)
    response = client.get("/api/ops/queue", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert set(response.json()) >= {"waiting", "chats_per_agent", "matches_last_hour"}


def test_dashboard_refuses_an_agent_when_they_open_it(client):
    agent = available_agent()
    client.force_login(agent.user)
    assert client.get(DASHBOARD).status_code == 403


def test_dashboard_sends_the_anonymous_to_login_when_they_open_it(client):
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_admin_index_links_the_dashboard_when_a_lead_signs_in(client):
    client.force_login(build.lead())
    text = client.get("/admin/").text
    assert 'id="live-floor-module"' in text
    assert f'href="{DASHBOARD}"' in text
    # The lead sees the apps they need.
    for model in ("chatsession", "agent", "shift", "assignment", "customerdataaccess"):
        assert f"/{model}/" in text


def test_admin_index_hides_the_dashboard_link_when_staff_lack_view_queue(client):
    viewer = build.user("viewer", staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_chatsession"))
    client.force_login(viewer)
    text = client.get("/admin/").text
    assert 'id="live-floor-module"' not in text
    assert 'id="dashboard-link"' not in text


def test_support_lead_group_holds_exactly_the_listed_permissions_when_migrated():
    group = Group.objects.get(name=SUPPORT_LEAD_GROUP)
    held = set(group.permissions.values_list("content_type__app_label", "codename"))
    assert held == set(SUPPORT_LEAD_PERMISSIONS)
    # Nothing that changes state a service owns, nothing about users.
    writes = {c for _, c in held if c.startswith(("add_", "change_", "delete_"))}
    assert writes == {"add_shift", "change_shift", "delete_shift"}
    assert not any(app == "auth" for app, _ in held)


def test_ensure_support_lead_group_repairs_the_group_when_its_permissions_drifted():
    group = Group.objects.get(name=SUPPORT_LEAD_GROUP)
    group.permissions.add(Permission.objects.get(codename="change_chatsession"))
    group.permissions.remove(Permission.objects.get(codename="view_queue"))
    again = ensure_support_lead_group()
    assert again.pk == group.pk
    held = set(group.permissions.values_list("content_type__app_label", "codename"))
    assert held == set(SUPPORT_LEAD_PERMISSIONS)
    assert Group.objects.filter(name=SUPPORT_LEAD_GROUP).count() == 1


def test_ensure_support_lead_group_creates_it_when_it_is_missing():
    Group.objects.filter(name=SUPPORT_LEAD_GROUP).delete()
    group = ensure_support_lead_group()
    assert group.permissions.count() == len(SUPPORT_LEAD_PERMISSIONS)


def test_lead_holds_the_operational_permissions_when_in_the_group():
    lead = build.lead()
    assert lead.has_perm("history.view_queue")
    assert lead.has_perm("history.intervene_session")
    assert lead.has_perm("history.force_agent_status")
    assert not lead.has_perm("chat.change_chatsession")
    agent = available_agent()
    assert not agent.user.has_perm("history.view_queue")
    assert agent.user.is_staff  # staff, yet refused everywhere above by the permissions


def test_seed_demo_puts_lead1_in_the_group_when_run():
    call_command("seed_demo", "--agents", "1", "--customers", "1", verbosity=0)
    lead = User.objects.get(username="lead1")
    assert lead.groups.filter(name=SUPPORT_LEAD_GROUP).exists()
    assert lead.has_perm("history.view_queue")
