from django.urls import path

from history.views import dashboard

urlpatterns = [path("", dashboard, name="ops-dashboard")]
