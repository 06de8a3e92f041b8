"""Celery entry points: the app, the beat schedule, thin tasks, and the top-level CLI.

``celery -A workers worker`` finds the app here.
"""

from workers import observability  # noqa: F401 - our logging replaces Celery's
from workers.app import app

__all__ = ["app"]
