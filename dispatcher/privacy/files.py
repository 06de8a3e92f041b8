"""Affiliate export files on disk: forgotten by retention and by erasure alike."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from dispatcher.models import AffiliateRelease


def forget_export_files(
    session: Session, which: ColumnElement[bool], *, dry_run: bool = False
) -> int:
    """Delete the export files of the releases ``which`` selects; the rows stay, audited,
    with no path. Returns how many files were forgotten."""
    releases = list(
        session.execute(
            select(AffiliateRelease.id, AffiliateRelease.path).where(
                which, AffiliateRelease.kind == "export", AffiliateRelease.path.is_not(None)
            )
        )
    )
    if dry_run or not releases:
        return len(releases)
    session.execute(
        update(AffiliateRelease)
        .where(AffiliateRelease.id.in_([r.id for r in releases]))
        .values(path=None)
    )
    for release in releases:
        Path(release.path).unlink(missing_ok=True)
    return len(releases)
