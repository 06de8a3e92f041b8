"""Affiliate downloads: signed, expiring, audited."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("affiliates", __name__, url_prefix="/affiliates")
