"""URL map. Each app owns its routes; this file only mounts them."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dayone_chat.health import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/dashboard/", include("history.urls")),  # the leads' live floor
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/agent/", include("agents.api.urls")),  # /api/agent/me, customer data
    path("api/ops/", include("history.api.urls")),  # /api/ops/queue for support leads
    path("api/", include("chat.api.urls")),  # auth, customer sessions
    path("console/", include("agents.urls")),  # the agent console page
    path("", include("chat.urls")),  # the customer web page
]

handler404 = "dayone_chat.api.json_not_found"
handler500 = "dayone_chat.api.json_server_error"
