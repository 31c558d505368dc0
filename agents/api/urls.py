"""/api/agent/... (mounted by dayone_chat.urls)."""

from django.urls import path

from agents.api import customer_data, views

urlpatterns = [
    path("me", views.AgentMeView.as_view(), name="agent-me"),
    path("queue", views.AgentQueueView.as_view(), name="agent-queue"),
    # DayOne customer data of a session's customer (access-checked and logged).
    path(
        "customers/<uuid:session_id>/profile",
        customer_data.CustomerProfileView.as_view(),
        name="agent-customer-profile",
    ),
    path(
        "customers/<uuid:session_id>/orders",
        customer_data.CustomerOrdersView.as_view(),
        name="agent-customer-orders",
    ),
    path(
        "customers/<uuid:session_id>/transactions",
        customer_data.CustomerTransactionsView.as_view(),
        name="agent-customer-transactions",
    ),
]
