"""Rendering campaign e-mail: Jinja2 templates, CSS inlined by premailer once per campaign.

Inlining CSS is the costly step (tens of milliseconds a call), so :func:`prepare_campaign`
renders each part once with placeholders for the recipient's fields, inlines the HTML once,
and keeps the result as segments; a recipient's message is then the segments joined with
that recipient's values, escaped as their place in the HTML needs. Before a campaign uses
that fast path it is proved on sample recipients (awkward characters, missing names) to give
exactly what a full per-recipient render gives; a template for which it does not (a filter or
a condition on a recipient field) is rendered in full for every recipient instead.
"""

from __future__ import annotations

import logging
import re
import secrets
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import premailer
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    select_autoescape,
)
from markupsafe import Markup

from dispatcher.settings import Settings

log = logging.getLogger(__name__)

PARTS = ("body.html", "body.txt")
META = "template.toml"
RECIPIENT_FIELDS = (
    "first_name",
    "last_name",
    "greeting_name",
    "unsubscribe_url",
    "preferences_url",
)


class TemplateProblem(Exception):
    """A template that cannot be used as it is; the message names the template and why."""


@dataclass(frozen=True)
class CampaignView:
    """What a template may know about its campaign."""

    id: int
    name: str
    subject: str
    purpose: str
    template: str


@dataclass(frozen=True)
class Recipient:
    """What a template may know about its recipient."""

    first_name: str | None
    last_name: str | None
    unsubscribe_url: str
    preferences_url: str


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str


SAMPLE_RECIPIENTS = (
    Recipient(
        'Zoë <b>&amp;"O\'Brien"</b>',
        "Łukasz & Søn",
        "https://example.invalid/u/SAMPLE.tok",
        "https://example.invalid/preferences/SAMPLE.tok",
    ),
    Recipient(
        None,
        None,
        "https://example.invalid/u/other?a=1&b=2",
        "https://example.invalid/preferences/other",
    ),
)


@lru_cache(maxsize=8)
def _environment(templates_dir: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(str(templates_dir)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
    )


def list_templates(settings: Settings) -> list[str]:
    root = settings.templates_dir / "email"
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith("_") and (p / META).exists()
    )


def template_purpose(settings: Settings, name: str) -> str:
    """The purpose a template declares in its ``template.toml`` (marketing or service_notice)."""
    folder = settings.templates_dir / "email" / name
    if name.startswith("_") or "/" in name or ".." in name or not (folder / META).is_file():
        known = ", ".join(list_templates(settings)) or "none"
        raise TemplateProblem(f"no template named {name!r} (known: {known})")
    try:
        meta = tomllib.loads((folder / META).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TemplateProblem(f"template {name!r}: {META} is not valid TOML: {exc}") from None
    purpose = meta.get("purpose")
    if purpose not in ("marketing", "service_notice"):
        raise TemplateProblem(
            f'template {name!r}: {META} must say purpose = "marketing" or "service_notice"'
        )
    return str(purpose)


def _campaign_context(settings: Settings, campaign: CampaignView) -> dict[str, Any]:
    return {
        "campaign": campaign,
        "company_name": settings.company_name,
        "postal_address": settings.postal_address,
        "base_url": settings.base_url,
        "marketing": campaign.purpose == "marketing",
    }


def _recipient_values(recipient: Recipient) -> dict[str, str]:
    return {
        "first_name": recipient.first_name or "",
        "last_name": recipient.last_name or "",
        "greeting_name": recipient.first_name or "there",
        "unsubscribe_url": recipient.unsubscribe_url,
        "preferences_url": recipient.preferences_url,
    }


def _inline_css(html: str) -> str:
    return str(
        premailer.Premailer(
            html,
            keep_style_tags=True,
            strip_important=False,
            disable_validation=True,
            allow_network=False,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    )


class _Renderer:
    """Renders one campaign's parts; raises TemplateProblem naming the part at fault."""

    def __init__(self, settings: Settings, campaign: CampaignView) -> None:
        self.env = _environment(settings.templates_dir)
        self.campaign = campaign
        self.context = _campaign_context(settings, campaign)

    def render(self, template: str, values: dict[str, Any], *, file: str) -> str:
        try:
            if file == "subject":
                return self.env.from_string(template).render({**self.context, **values})
            return self.env.get_template(template).render({**self.context, **values})
        except UndefinedError as exc:
            raise TemplateProblem(
                f"{file}: {exc.message} (a variable the template may not use)"
            ) from None
        except TemplateSyntaxError as exc:
            raise TemplateProblem(
                f"{exc.filename or file} line {exc.lineno}: {exc.message}"
            ) from None
        except TemplateNotFound as exc:
            raise TemplateProblem(f"{file}: template file {exc.name} is missing") from None
        except TemplateError as exc:
            raise TemplateProblem(f"{file}: {exc}") from None


def _render_full(
    renderer: _Renderer, paths: dict[str, str], subject_source: str, values: dict[str, Any]
) -> RenderedMessage:
    subject = renderer.render(subject_source, values, file="subject")
    text = renderer.render(paths["body.txt"], {**values, "subject": subject}, file="body.txt")
    html = renderer.render(
        paths["body.html"], {**values, "subject": Markup.escape(subject)}, file="body.html"
    )
    return RenderedMessage(subject=subject.strip(), text=text, html=_inline_css(html))


_ESCAPE_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ESCAPE_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


@dataclass(frozen=True)
class _Segments:
    """A rendered part cut at the placeholders: literals and (field, escaping) pairs."""

    parts: tuple[str | tuple[str, str], ...]

    def fill(self, values: dict[str, str]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                field, escaping = part
                value = values[field]
                if escaping == "attr":
                    value = value.translate(_ESCAPE_ATTR)
                elif escaping == "text":
                    value = value.translate(_ESCAPE_TEXT)
                out.append(value)
        return "".join(out)


def _cut(rendered: str, pattern: re.Pattern[str], html: bool) -> _Segments:
    parts: list[str | tuple[str, str]] = []
    position = 0
    for match in pattern.finditer(rendered):
        parts.append(rendered[position : match.start()])
        escaping = "raw"
        if html:
            before = rendered[: match.start()]
            escaping = "attr" if before.rfind("<") > before.rfind(">") else "text"
        parts.append((RECIPIENT_FIELDS[int(match.group(1))], escaping))
        position = match.end()
    parts.append(rendered[position:])
    return _Segments(tuple(p for p in parts if p != ""))


class PreparedCampaign:
    """A campaign ready to render recipient after recipient."""

    def __init__(
        self,
        renderer: _Renderer,
        paths: dict[str, str],
        subject_source: str,
        fast: tuple[_Segments, _Segments, _Segments] | None,
    ) -> None:
        self._renderer = renderer
        self._paths = paths
        self._subject_source = subject_source
        self._fast = fast

    @property
    def fast(self) -> bool:
        return self._fast is not None

    def render(self, recipient: Recipient) -> RenderedMessage:
        values = _recipient_values(recipient)
        if self._fast is None:
            return _render_full(self._renderer, self._paths, self._subject_source, values)
        subject, text, html = self._fast
        return RenderedMessage(
            subject=subject.fill(values).strip(), text=text.fill(values), html=html.fill(values)
        )

    def render_full(self, recipient: Recipient) -> RenderedMessage:
        """The reference: everything rendered and inlined for this one recipient."""
        values = _recipient_values(recipient)
        return _render_full(self._renderer, self._paths, self._subject_source, values)


def _sources(settings: Settings, template: str) -> tuple[dict[str, str], str | None]:
    folder = settings.templates_dir / "email" / template
    missing = [p for p in PARTS if not (folder / p).is_file()]
    if missing:
        raise TemplateProblem(f"template {template!r} has no {', '.join(missing)}")
    subject_file = folder / "subject.txt"
    subject = subject_file.read_text(encoding="utf-8").strip() if subject_file.exists() else None
    return {p: f"email/{template}/{p}" for p in PARTS}, subject


def prepare_campaign(settings: Settings, campaign: CampaignView) -> PreparedCampaign:
    """Render the campaign's parts once (CSS inlined once) and prove the fast path."""
    name = campaign.template
    template_purpose(settings, name)
    paths, subject_file = _sources(settings, name)
    renderer = _Renderer(settings, campaign)
    subject_source = subject_file if subject_file is not None else campaign.subject

    nonce = secrets.token_hex(5)
    placeholders = {f: f"zq{nonce}x{i}q" for i, f in enumerate(RECIPIENT_FIELDS)}
    pattern = re.compile(rf"zq{nonce}x(\d+)q")
    with_placeholders = _render_full(renderer, paths, subject_source, placeholders)
    fast = (
        _cut(with_placeholders.subject, pattern, html=False),
        _cut(with_placeholders.text, pattern, html=False),
        _cut(with_placeholders.html, pattern, html=True),
    )
    prepared = PreparedCampaign(renderer, paths, subject_source, fast)
    for sample in SAMPLE_RECIPIENTS:
        if prepared.render(sample) != prepared.render_full(sample):
            log.warning(
                "campaign %s: template %r needs a full render per recipient (slower)",
                campaign.id,
                name,
            )
            return PreparedCampaign(renderer, paths, subject_source, None)
    return prepared


def check_campaign(settings: Settings, campaign: CampaignView) -> None:
    """Refuse, with the reason, a campaign that must not be scheduled as it is.

    The template must exist, declare the campaign's purpose, render for sample recipients
    without an undefined variable, give a one-line subject, and — for marketing — carry the
    unsubscribe link and the postal address in both the HTML and the text part.
    """
    name = campaign.template
    declared = template_purpose(settings, name)
    if declared != campaign.purpose:
        raise TemplateProblem(
            f"template {name!r} is for {declared} mail, but the campaign is {campaign.purpose}"
        )
    prepared = prepare_campaign(settings, campaign)
    for sample in SAMPLE_RECIPIENTS:
        message = prepared.render_full(sample)
        if not message.subject:
            raise TemplateProblem(f"template {name!r}: the subject is empty")
        if any(ch in message.subject for ch in "\r\n\x00"):
            raise TemplateProblem(f"template {name!r}: the subject contains a line break")
        if campaign.purpose != "marketing":
            continue
        for part, body in (("body.html", message.html), ("body.txt", message.text)):
            unsubscribe = sample.unsubscribe_url
            if part == "body.html":
                unsubscribe = unsubscribe.replace("&", "&amp;")
            if unsubscribe not in body:
                raise TemplateProblem(
                    f"template {name!r}: {part} lacks the unsubscribe link "
                    "({{ unsubscribe_url }}), which marketing mail must carry"
                )
            if settings.postal_address not in body:
                raise TemplateProblem(
                    f"template {name!r}: {part} lacks the postal address "
                    "({{ postal_address }}), which marketing mail must carry"
                )
