"""Which column of a contacts file means what: our own columns, ``--map``, and presets for
the exports people bring from Mailchimp, listmonk and Mautic.

A column that is not one of ours becomes a contact attribute, under a name an audience
expression can use (``Phone Number`` → ``Phone_Number``; see dispatcher.campaigns.audience).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dispatcher.campaigns.audience import ATTRIBUTE_NAME

FIELDS = (
    "email",
    "first_name",
    "last_name",
    "marketing_consent",
    "affiliates_consent",
    "consent_source",
    "consent_at",
    "tags",
)
IGNORE = "-"


@dataclass
class Values:
    """One row, read through the layout: our fields, tags and attributes."""

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    marketing_consent: str | None = None
    affiliates_consent: str | None = None
    consent_source: str | None = None
    consent_at: str | None = None
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)


# A preset's own reading of a row, after the columns were mapped: (values, raw by column).
Transform = Callable[[Values, dict[str, str]], Values]


def attribute_name(column: str, *, lower: bool = False) -> str | None:
    """The attribute name for a column, or None when nothing usable is left of it."""
    name = re.sub(r"[^A-Za-z0-9_\-]+", "_", column.strip()).strip("_-")[:64]
    if lower:
        name = name.lower()
    if name and not ATTRIBUTE_NAME.match(name):
        name = f"_{name}"[:64]
    return name if name and ATTRIBUTE_NAME.match(name) else None


@dataclass
class Layout:
    header: list[str]
    targets: list[str]  # per column: one of FIELDS, "attr:NAME" or IGNORE
    tag_separator: str = ";"
    transform: Transform | None = None
    needs_raw: bool = False

    def __post_init__(self) -> None:
        self.width = len(self.header)
        self._columns = {t: h for h, t in zip(self.header, self.targets, strict=True)}
        self._fields = [(i, t) for i, t in enumerate(self.targets) if t in FIELDS and t != "tags"]
        self._attrs = [(i, t[5:]) for i, t in enumerate(self.targets) if t.startswith("attr:")]
        self._tags = [i for i, t in enumerate(self.targets) if t == "tags"]

    def column_of(self, target: str) -> str:
        """The file's name for one of our fields or attributes (for messages)."""
        return self._columns.get(target, self._columns.get(f"attr:{target}", target))

    def extract(self, fields: list[str]) -> Values:
        n = len(fields)
        values = Values()
        for i, target in self._fields:
            if i < n:
                setattr(values, target, fields[i])
        for i in self._tags:
            if i < n and fields[i]:
                values.tags.extend(fields[i].split(self.tag_separator))
        for i, name in self._attrs:
            if i < n and fields[i].strip():
                values.attributes[name] = fields[i]
        if self.transform is not None:
            raw = dict(zip(self.header, fields, strict=False)) if self.needs_raw else {}
            values = self.transform(values, raw)
        return values


def parse_map(text: str) -> dict[str, str]:
    """``"Email Address=email,First Name=first_name,Fax=-"`` as a dict; ValueError if bad."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        column, sep, target = part.partition("=")
        if not sep or not column.strip():
            raise ValueError(f"--map: {part.strip()!r} is not COLUMN=FIELD")
        mapping[column.strip()] = target.strip() or IGNORE
    return mapping


def _target(column: str, mapped: str | None, *, lower: bool) -> str:
    if mapped is not None:
        if mapped == IGNORE or mapped in FIELDS:
            return mapped
        name = attribute_name(mapped)
        if name != mapped:
            raise ValueError(
                f"--map: {mapped!r} (for the column {column!r}) is neither one of "
                f"{', '.join(FIELDS)} nor an attribute name (letters, digits, _ and -)"
            )
        return f"attr:{name}"
    if column in FIELDS:
        return column
    name = attribute_name(column, lower=lower)
    if name is None:
        raise ValueError(
            f"the column {column!r} has no name an audience could use; "
            f'name it with --map "{column}=NAME" (or "{column}=-" to leave it out)'
        )
    return f"attr:{name}"


def layout_for(
    header: list[str],
    *,
    mapping: dict[str, str] | str | None = None,
    preset: str | None = None,
) -> Layout:
    """The layout of a file with this header; ValueError (the file cannot be imported) when
    the header lacks an email column, names a column twice or maps two columns to one field."""
    names = [h.strip() for h in header]
    if not any(names):
        raise ValueError("the file is empty (no header row)")
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise ValueError(f"the header names {', '.join(dupes)} twice")
    given = parse_map(mapping) if isinstance(mapping, str) else dict(mapping or {})
    spec = PRESETS.get(preset) if preset else None
    if preset and spec is None:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"--map names column(s) the file does not have: {', '.join(unknown)}")
    columns = {**(spec.columns if spec else {}), **given}
    targets = [_target(h, columns.get(h), lower=spec is not None) for h in names]
    taken = [t for t in targets if t != IGNORE]
    twice = sorted({t for t in taken if taken.count(t) > 1 and t != "tags"})
    if twice:
        raise ValueError(f"two columns would both be {', '.join(twice)}; map one of them")
    if "email" not in targets:
        raise ValueError(
            f"the header lacks the column(s) email (found: {', '.join(names)}); "
            'name it with --map "YOUR COLUMN=email"'
        )
    if spec is None:
        return Layout(names, targets)
    return Layout(
        names,
        targets,
        tag_separator=spec.tag_separator,
        transform=spec.transform,
        needs_raw=spec.transform is not None,
    )


# ---- presets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    columns: dict[str, str]
    tag_separator: str = ";"
    transform: Transform | None = None


_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(\.\d+)? ([+-]\d\d)(\d\d)(?: \S+)?$")


def go_time(text: str) -> str:
    """listmonk writes Go's ``time.String()``: ``2024-01-15 10:20:30.123456789 +0000 UTC``."""
    found = _GO_TIME.match(text.strip())
    if not found:
        return text
    day, clock, fraction, hours, minutes = found.groups()
    return f"{day}T{clock}{(fraction or '')[:7]}{hours}:{minutes}"


def _mailchimp(values: Values, raw: dict[str, str]) -> Values:
    # An audience export is three files: subscribed, unsubscribed and cleaned (bounced)
    # members; which one this is shows in its columns. A cleaned address is kept from mail.
    if "UNSUB_TIME" in raw:
        values.marketing_consent, values.consent_at = "no", raw["UNSUB_TIME"]
        values.consent_source = "mailchimp:unsubscribed"
    elif "CLEAN_TIME" in raw:
        values.marketing_consent, values.consent_at = "no", raw["CLEAN_TIME"]
        values.consent_source = "mailchimp:cleaned"
    else:
        values.marketing_consent = "yes"
        values.consent_at = raw.get("CONFIRM_TIME") or raw.get("OPTIN_TIME") or ""
        values.consent_source = "mailchimp:subscribed"
    values.tags = [t.strip().strip('"') for t in values.tags]
    return values


def _listmonk(values: Values, raw: dict[str, str]) -> Values:
    name = (raw.get("name") or "").strip()
    if name and values.first_name is None:
        first, _, last = name.partition(" ")
        values.first_name, values.last_name = first, last.strip() or None
    attributes = (raw.get("attributes") or "").strip()
    if attributes and attributes != "{}":
        try:
            loaded = json.loads(attributes)
        except ValueError:
            raise ValueError("attributes: is not a JSON object") from None
        if not isinstance(loaded, dict):
            raise ValueError("attributes: is not a JSON object")
        for key, value in loaded.items():
            attr = attribute_name(str(key), lower=True)
            if attr is None or value is None:
                continue
            values.attributes[attr] = value if isinstance(value, str) else json.dumps(value)
    if (raw.get("status") or "").strip().lower() == "blocklisted":  # out of every list
        values.marketing_consent = "no"
        values.consent_at = go_time(raw.get("updated_at") or "")
    else:
        _listmonk_subscription(values, raw)
    values.consent_source = "listmonk"
    return values


def _listmonk_subscription(values: Values, raw: dict[str, str]) -> None:
    """Consent from a per-list ``subscription_status`` column, when the file has one.

    ``enabled`` alone says nothing: a subscriber who unsubscribed from a list stays enabled,
    and listmonk's export does not show the list's status (knadh/listmonk#1609), so reading
    it as an opt-in would turn that unsubscribe into one. ``unconfirmed`` is the state of
    everyone on a single opt-in list and of whoever never confirmed on a double opt-in one,
    which the file does not tell apart: no consent either. Times err towards the opt-out:
    an unsubscribe counts as of the import (listmonk does not always move the subscription's
    ``updated_at`` when a list is left, so that time may be older than the unsubscribe); a
    confirmed subscription is dated when it was made (``subscription_created_at``, before its
    confirmation), or undated, and then loses to every opt-out."""
    status = (raw.get("subscription_status") or "").strip().lower()
    if status == "unsubscribed":
        values.marketing_consent, values.consent_at = "no", ""
    elif status == "confirmed":
        values.marketing_consent = "yes"
        values.consent_at = go_time(raw.get("subscription_created_at") or "")
    elif status not in ("", "unconfirmed"):
        raise ValueError(
            "subscription_status: is not one of listmonk's (confirmed, unconfirmed, unsubscribed)"
        )


_MAILCHIMP_TRACKING = [
    "MEMBER_RATING",
    "OPTIN_TIME",
    "OPTIN_IP",
    "CONFIRM_TIME",
    "CONFIRM_IP",
    "LATITUDE",
    "LONGITUDE",
    "GMTOFF",
    "DSTOFF",
    "TIMEZONE",
    "CC",
    "REGION",
    "LAST_CHANGED",
    "LEID",
    "EUID",
    "NOTES",
    "UNSUB_TIME",
    "UNSUB_CAMPAIGN_TITLE",
    "UNSUB_CAMPAIGN_ID",
    "UNSUB_REASON",
    "UNSUB_REASON_OTHER",
    "CLEAN_TIME",
    "CLEAN_CAMPAIGN_TITLE",
    "CLEAN_CAMPAIGN_ID",
]

PRESETS: dict[str, Preset] = {
    # Mailchimp audience export (subscribed / unsubscribed / cleaned members CSVs): merge
    # fields become attributes; the tracking columns (ratings, IPs, location) are left out.
    "mailchimp": Preset(
        columns={
            "Email Address": "email",
            "First Name": "first_name",
            "Last Name": "last_name",
            "TAGS": "tags",
            **{c: IGNORE for c in _MAILCHIMP_TRACKING},
        },
        tag_separator=",",
        transform=_mailchimp,
    ),
    # listmonk subscribers export: uuid,email,name,attributes,status,created_at,updated_at;
    # a list's status (subscription_status and its times) only where a file carries it.
    "listmonk": Preset(
        columns={
            "uuid": IGNORE,
            "email": "email",
            "name": IGNORE,
            "attributes": IGNORE,
            "status": IGNORE,
            "created_at": IGNORE,
            "updated_at": IGNORE,
            "subscription_status": IGNORE,
            "subscription_created_at": IGNORE,
            "subscription_updated_at": IGNORE,
        },
        transform=_listmonk,
    ),
    # Mautic contacts export: field aliases as columns; no consent in it, so none is set.
    "mautic": Preset(
        columns={
            "id": IGNORE,
            "email": "email",
            "firstname": "first_name",
            "lastname": "last_name",
            "tags": "tags",
            "ipAddress": IGNORE,
            "ip_address": IGNORE,
            "last_active": IGNORE,
            "date_added": IGNORE,
            "date_modified": IGNORE,
            "date_identified": IGNORE,
            "dateadded": IGNORE,
            "datemodified": IGNORE,
            "dateidentified": IGNORE,
            "owner": IGNORE,
            "owner_id": IGNORE,
        },
        tag_separator="|",
    ),
}
