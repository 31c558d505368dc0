from django.urls import path

from history.api.views import QueueHistoryView, QueueView

urlpatterns = [
    path("queue", QueueView.as_view(), name="ops-queue"),
    path("queue/history", QueueHistoryView.as_view(), name="ops-queue-history"),
]
