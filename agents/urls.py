"""/console/ (mounted by dayone_chat.urls): the agent console."""

from django.urls import path

from agents import views

urlpatterns = [
    path("", views.console, name="console"),
]
