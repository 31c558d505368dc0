from __future__ import annotations

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

VIEW_QUEUE = "history.view_queue"


class CanViewQueue(BasePermission):
    """Staff with ``history.view_queue`` (leads, superusers); agents are staff without it."""

    message = "Only support leads may see the queue."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm(VIEW_QUEUE))
