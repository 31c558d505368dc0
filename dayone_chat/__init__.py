"""DayOne Chat: the backend that runs a support chat between a DayOne customer and a human agent."""

from .celery import app as celery_app

__all__ = ("celery_app",)
