"""Routes of the customer web page (mounted at "/"). The page talks to /api/ and /ws/ itself."""

from django.urls import path

from chat.views import customer_page

urlpatterns = [
    path("", customer_page, name="customer-page"),
]
