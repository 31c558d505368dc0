"""/api/auth/... and /api/sessions/... (mounted under /api/ by dayone_chat.urls)."""

from django.urls import path

from chat.api import views

urlpatterns = [
    path("auth/token", views.TokenView.as_view(), name="auth-token"),
    path("auth/token/refresh", views.TokenRefresh.as_view(), name="auth-token-refresh"),
    path("auth/ws-ticket", views.WsTicketView.as_view(), name="auth-ws-ticket"),
    path("sessions", views.SessionListView.as_view(), name="sessions"),
    path("sessions/<uuid:session_id>", views.SessionDetailView.as_view(), name="session"),
    path(
        "sessions/<uuid:session_id>/messages",
        views.SessionMessagesView.as_view(),
        name="session-messages",
    ),
    path(
        "sessions/<uuid:session_id>/resume",
        views.SessionResumeView.as_view(),
        name="session-resume",
    ),
    path("sessions/<uuid:session_id>/end", views.SessionEndView.as_view(), name="session-end"),
]
