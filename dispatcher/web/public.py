"""Recipient pages: unsubscribe, RFC 8058 one-click, preference center."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("public", __name__)
