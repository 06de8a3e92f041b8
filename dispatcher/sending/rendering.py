"""Rendering campaign e-mail: Jinja2 templates, CSS inlined by premailer once per campaign.

One template is one folder, ``templates/email/<name>/``: ``body.html``, ``body.txt``, an
optional ``subject.txt`` (else the campaign's subject, itself a Jinja string) and
``template.toml`` declaring its purpose. Inlining CSS is the costly step (tens of
milliseconds a call), so :func:`prepare_campaign` renders each part once with placeholders
for the recipient's fields, inlines the HTML once, and fills the placeholders per recipient
(:mod:`dispatcher.sending.placeholders`). Before a campaign uses that fast path it is proved on
sample recipients (markup characters, non-ASCII, missing names) to give exactly what a full
per-recipient render gives; a template for which it does not (a filter or a condition on a
recipient field) is rendered in full for every recipient instead, and so is a recipient
whose values the samples do not cover. Correct first, fast when possible."""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jinja2 import (
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.sandbox import SecurityError
from markupsafe import Markup

from dispatcher.sending import markup, staff_text
from dispatcher.sending.placeholders import ESCAPE_ATTR, ESCAPE_TEXT, Placeholders, Segments, proven
from dispatcher.sending.quoted_printable import EncodedPart
from dispatcher.sending.sandbox import (
    BODY_TEMPLATE_NAMES,
    RECIPIENT_NAMES,
    STAFF_WRAPPER_NAMES,
    SUBJECT_NAMES,
    CampaignView,
    Recipient,
    TemplateProblem,
    campaign_context,
    check_source,
    check_template,
    file_environment,
    recipient_values,
    render_staff_text,
    usable_names,
)
from dispatcher.settings import Settings

log = logging.getLogger(__name__)

PARTS = ("body.html", "body.txt")
META = "template.toml"
# Far above what a mail client shows; it keeps a subject line well inside SMTP's limits.
MAX_SUBJECT = 250
# Part of every stored render's fingerprint: change it when rendering itself changes (the
# placeholders, the inliner's options), so renders stored before are not reused.
RENDER_VERSION = "2"
RECIPIENT_FIELDS = tuple(RECIPIENT_NAMES)
__all__ = [
    "CampaignView",
    "Recipient",
    "RenderedMessage",
    "TemplateProblem",
    "check_campaign",
    "check_template",
    "list_layouts",
    "prepare_campaign",
    "render_staff_text",
]


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str
    # text and html as quoted-printable, when the render already has them (the fast path
    # encodes only the lines that hold a recipient's value: quoted_printable.EncodedPart).
    encoded: tuple[bytes, bytes] | None = field(default=None, compare=False)


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
        "https://example.invalid/u/x?a=1&b=2'<>!#$%()*+,-./:;=@[\\]^_`{|}~",
        "https://example.invalid/preferences/x?a=1&b=2'<>!#$%()*+,-./:;=@[\\]^_`{|}~",
    ),
)


def _email_folders(settings: Settings) -> list[Path]:
    root = settings.templates_dir / "email"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def list_layouts(settings: Settings) -> list[str]:
    """Folders of templates/email/ that a staff-written body can sit in (base.html + .txt)."""
    return [
        p.name
        for p in _email_folders(settings)
        if (p / "base.html").is_file() and (p / "base.txt").is_file()
    ]


def list_templates(settings: Settings) -> list[str]:
    return [
        p.name
        for p in _email_folders(settings)
        if not p.name.startswith("_") and (p / META).exists()
    ]


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


def _inline_css(template: str, html: str) -> str:
    if not html.strip():
        raise TemplateProblem(f"template {template!r}: body.html renders to nothing")
    # Imported on the first campaign a process prepares, not by every process that imports
    # this module (premailer brings lxml, cssutils and requests: ~15 MB).
    import premailer

    try:
        inliner = premailer.Premailer(
            html,
            keep_style_tags=True,
            strip_important=False,
            disable_validation=True,
            allow_network=False,
            cssutils_logging_level=logging.CRITICAL,
        )
        return str(inliner.transform())
    except Exception as exc:  # premailer/lxml/cssutils raise many kinds; name it, once
        raise TemplateProblem(
            f"template {template!r}: body.html could not have its CSS inlined"
            f" ({type(exc).__name__}: {exc})"
        ) from exc


class _Renderer:
    """Renders one campaign's parts; raises TemplateProblem naming the file and line at fault."""

    def __init__(self, settings: Settings, campaign: CampaignView) -> None:
        self.env = file_environment(settings.templates_dir)
        self.root = settings.templates_dir / "email"
        self.campaign = campaign
        self.context = campaign_context(settings, campaign)

    def render(self, template: str, values: dict[str, Any], *, file: str) -> str:
        name = self.campaign.template
        content = self.campaign.content
        if content is not None:
            try:
                return self._render_staff(content, template, values, file=file)
            except staff_text.StaffTextProblem as exc:
                raise TemplateProblem(
                    f"campaign {self.campaign.id} content version {content.version}: {exc}"
                ) from None
        try:
            if file == "subject":
                return self.env.from_string(template).render({**self.context, **values})
            return self.env.get_template(template).render({**self.context, **values})
        except UndefinedError as exc:
            usable = usable_names(SUBJECT_NAMES if file == "subject" else BODY_TEMPLATE_NAMES)
            raise TemplateProblem(
                f"template {name!r}, {self._where(exc, file)}: {exc.message}"
                f" (a template may use: {usable})"
            ) from None
        except SecurityError as exc:
            raise TemplateProblem(
                f"template {name!r}, {self._where(exc, file)}: refused by the sandbox: {exc}"
            ) from None
        except TemplateSyntaxError as exc:
            source = self._relative(exc.filename) if exc.filename else file
            raise TemplateProblem(
                f"template {name!r}: {source} line {exc.lineno}: {exc.message}"
            ) from None
        except TemplateNotFound as exc:
            raise TemplateProblem(
                f"template {name!r}: {file} needs {exc.name}, which is missing"
            ) from None
        except TemplateError as exc:
            raise TemplateProblem(f"template {name!r}: {file}: {exc}") from None

    def _render_staff(
        self, content: staff_text.StaffContent, template: str, values: dict[str, Any], *, file: str
    ) -> str:
        """Staff text in its own sandbox render, passed as a value to the layout around it
        (rendered, like every template file, in the sandboxed file environment)."""
        names = {**self.context, **values}
        if file == "subject":
            return staff_text.render_staff_text(template, names, html=False, part="the subject")
        # The HTML render hands the layout the subject already escaped; staff text escapes
        # its values itself, so it gets the subject as typed (escaped once, not twice).
        subject = values.get("subject", "")
        plain_subject = subject.unescape() if isinstance(subject, Markup) else str(subject)
        body_html = staff_text.render_staff_text(
            staff_text.body_html_source(content.body_format, content.body),
            {**names, "subject": plain_subject},
            html=True,
            part="the body",
        )
        staff_text.check_body_markup(body_html)
        if file == "body.html":
            staff: dict[str, Any] = {
                # Rendered by the sandbox with autoescape: the staff member's own markup,
                # every value in it escaped.
                "staff_body": Markup(body_html),  # noqa: S704
                "staff_preheader": content.preheader,
            }
        elif content.body_text is not None:
            staff = {
                "staff_body": staff_text.render_staff_text(
                    content.body_text,
                    {**names, "subject": plain_subject},
                    html=False,
                    part="the text part",
                )
            }
        else:
            staff = {"staff_body": staff_text.text_from_html(body_html)}
        try:
            return self.env.get_template(template).render({**names, **staff})
        except TemplateNotFound as exc:
            raise TemplateProblem(
                f"campaign {self.campaign.id}: layout {content.layout!r} needs {exc.name},"
                " which is missing"
            ) from None
        except TemplateError as exc:
            raise TemplateProblem(
                f"campaign {self.campaign.id}: layout {content.layout!r}: {exc}"
            ) from None

    def _relative(self, filename: str) -> str:
        path = Path(filename)
        for base in (self.root / self.campaign.template, self.root):
            if path.is_relative_to(base):
                return path.relative_to(base).as_posix()
        return filename

    def _where(self, exc: BaseException, file: str) -> str:
        """The innermost template file and line in the traceback (Jinja maps it there)."""
        where = file
        tb = exc.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename == "<template>":
                where = f"{'the subject' if file == 'subject' else file} line {tb.tb_lineno}"
            elif Path(filename).is_relative_to(self.root):
                where = f"{self._relative(filename)} line {tb.tb_lineno}"
            tb = tb.tb_next
        return where


def _render_full(
    renderer: _Renderer, paths: dict[str, str], subject_source: str, values: dict[str, Any]
) -> RenderedMessage:
    subject = renderer.render(subject_source, values, file="subject")
    text = renderer.render(paths["body.txt"], {**values, "subject": subject}, file="body.txt")
    html = renderer.render(
        paths["body.html"], {**values, "subject": Markup.escape(subject)}, file="body.html"
    )
    html = _inline_css(renderer.campaign.template, html)
    return RenderedMessage(subject=subject.strip(), text=text, html=html)


class PreparedCampaign:
    """A campaign ready to render recipient after recipient."""

    def __init__(
        self,
        renderer: _Renderer,
        paths: dict[str, str],
        subject_source: str,
        fast: tuple[Segments, Segments, Segments] | None,
        fingerprint: str = "",
    ) -> None:
        self._renderer = renderer
        self._paths = paths
        self._subject_source = subject_source
        self._fast = fast
        self._encoded = (EncodedPart.of(fast[1]), EncodedPart.of(fast[2])) if fast else None
        self.fingerprint = fingerprint

    @property
    def fast(self) -> bool:
        return self._fast is not None

    def stored(self) -> tuple[str, str] | None:
        """``(fingerprint, parts)`` for another process's :func:`prepare_campaign`, or None
        when every recipient is rendered in full (there is nothing to reuse)."""
        if self._fast is None:
            return None
        return self.fingerprint, json.dumps([list(part.parts) for part in self._fast])

    def render(self, recipient: Recipient) -> RenderedMessage:
        values = recipient_values(recipient)
        names = (recipient.first_name, recipient.last_name)
        urls = (recipient.unsubscribe_url, recipient.preferences_url)
        if self._fast is None or not proven(names, urls):
            return _render_full(self._renderer, self._paths, self._subject_source, values)
        subject, text, html = self._fast
        assert self._encoded is not None
        text_encoded, html_encoded = self._encoded
        return RenderedMessage(
            subject=subject.fill(values).strip(),
            text=text.fill(values),
            html=html.fill(values),
            encoded=(text_encoded.fill(values), html_encoded.fill(values)),
        )

    def render_full(self, recipient: Recipient) -> RenderedMessage:
        """The reference: everything rendered and inlined for this one recipient."""
        values = recipient_values(recipient)
        return _render_full(self._renderer, self._paths, self._subject_source, values)


def _sources(settings: Settings, template: str) -> tuple[dict[str, str], str | None]:
    folder = settings.templates_dir / "email" / template
    missing = [p for p in PARTS if not (folder / p).is_file()]
    if missing:
        raise TemplateProblem(f"template {template!r} has no {', '.join(missing)}")
    subject_file = folder / "subject.txt"
    subject = subject_file.read_text(encoding="utf-8").strip() if subject_file.exists() else None
    return {p: f"email/{template}/{p}" for p in PARTS}, subject


def _staff_sources(
    settings: Settings, campaign: CampaignView, content: staff_text.StaffContent
) -> tuple[dict[str, str], str]:
    if content.layout not in list_layouts(settings):
        known = ", ".join(list_layouts(settings)) or "none"
        raise TemplateProblem(
            f"campaign {campaign.id}: no layout named {content.layout!r} (known: {known})"
        )
    return {p: f"staff/{content.layout}/{p}" for p in PARTS}, content.subject


def _read_first(
    renderer: _Renderer, paths: dict[str, str], subject_source: str, subject_file: bool
) -> list[tuple[str, str]]:
    """Every part, and every file it extends or includes, read (not run) by the sandbox's
    check before anything renders: an unknown name or a ``_`` attribute is refused here.

    Staff-written content (subject, body, text part) is checked by
    :func:`staff_text.check_staff_content` with the names staff may use; the wrapper that
    puts it in a layout (``staff/<layout>/...``, ours) may also use the rendered body."""
    name, env, content = renderer.campaign.template, renderer.env, renderer.campaign.content
    if content is not None:
        try:
            staff_text.check_staff_content(content)
        except staff_text.StaffTextProblem as exc:
            raise TemplateProblem(
                f"campaign {renderer.campaign.id} content version {content.version}: {exc}"
            ) from None
    else:
        subject_where = "subject.txt" if subject_file else "the subject"
        check_source(
            env, subject_source, where=f"template {name!r}: {subject_where}", allowed=SUBJECT_NAMES
        )
    wrappers = set(paths.values()) if content is not None else set()
    pending, seen = list(paths.values()), set()
    read: list[tuple[str, str]] = []
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            source, filename, _ = env.loader.get_source(env, path)  # type: ignore[union-attr]
        except TemplateNotFound:
            raise TemplateProblem(f"template {name!r} needs {path}, which is missing") from None
        where = f"template {name!r}: {renderer._relative(filename or path)}"
        allowed = BODY_TEMPLATE_NAMES | (STAFF_WRAPPER_NAMES if path in wrappers else frozenset())
        pending += check_source(env, source, where=where, allowed=allowed)
        read.append((path, source))
    return read


def _fingerprint(renderer: _Renderer, subject_source: str, sources: list[tuple[str, str]]) -> str:
    """What a render with placeholders depends on: every template source it reads, the
    subject, and the campaign's and settings' values (the recipient's are placeholders)."""
    digest = hashlib.sha256()
    for piece in (
        RENDER_VERSION,
        repr(sorted(renderer.context.items())),
        subject_source,
        *(f"{path}\0{source}" for path, source in sorted(sources)),
    ):
        digest.update(piece.encode("utf-8", "surrogatepass"))
        digest.update(b"\0\1")
    return digest.hexdigest()


def prepare_campaign(
    settings: Settings, campaign: CampaignView, *, stored: tuple[str, str] | None = None
) -> PreparedCampaign:
    """Check the campaign's parts in the sandbox, render them once (CSS inlined once) and
    prove the fast path.

    ``stored`` is ``(fingerprint, parts)`` of an earlier preparation
    (:meth:`PreparedCampaign.stored`): when the fingerprint is still this render's, its
    parts are used as they are, and neither premailer nor the proof runs again."""
    name = campaign.template
    subject_file: str | None
    if campaign.content is not None:
        paths, subject_file = _staff_sources(settings, campaign, campaign.content)
    else:
        template_purpose(settings, name)
        paths, subject_file = _sources(settings, name)
    renderer = _Renderer(settings, campaign)
    subject_source = subject_file if subject_file is not None else campaign.subject
    sources = _read_first(renderer, paths, subject_source, subject_file is not None)
    fingerprint = _fingerprint(renderer, subject_source, sources)
    if stored is not None and stored[0] == fingerprint:
        loaded = _load_parts(stored[1])
        if loaded is not None:
            return PreparedCampaign(renderer, paths, subject_source, loaded, fingerprint)

    placeholders = Placeholders(RECIPIENT_FIELDS)
    with_placeholders = _render_full(renderer, paths, subject_source, placeholders.values)
    fast = (
        placeholders.cut(with_placeholders.subject, html=False),
        placeholders.cut(with_placeholders.text, html=False),
        placeholders.cut(with_placeholders.html, html=True),
    )
    prepared = PreparedCampaign(renderer, paths, subject_source, fast, fingerprint)
    for sample in SAMPLE_RECIPIENTS:
        quick, full = prepared.render(sample), prepared.render_full(sample)
        if quick != full:
            differs = [
                f for f in ("subject", "text", "html") if getattr(quick, f) != getattr(full, f)
            ]
            log.warning(
                "campaign %s: template %r uses a recipient field in a way the once-per-campaign"
                " render cannot reproduce (%s differs); rendering each recipient in full (slower)",
                campaign.id,
                name,
                ", ".join(differs),
            )
            return PreparedCampaign(renderer, paths, subject_source, None, fingerprint)
    return prepared


def _load_parts(text: str) -> tuple[Segments, Segments, Segments] | None:
    """Stored parts back into segments; None when they are not what :meth:`stored` wrote."""
    try:
        loaded = json.loads(text)
        subject, body_text, html = (
            Segments(tuple(p if isinstance(p, str) else (str(p[0]), str(p[1])) for p in part))
            for part in loaded
        )
    except (ValueError, TypeError, IndexError):
        return None
    return subject, body_text, html


def check_campaign(settings: Settings, campaign: CampaignView) -> PreparedCampaign:
    """Refuse, with the reason, a campaign that must not be scheduled as it is; return it
    prepared (to be stored for the sending processes).

    The template must exist, declare the campaign's purpose, render for sample recipients
    without an undefined variable, give a one-line subject, and — for marketing — carry the
    unsubscribe link and the postal address in both the HTML and the text part.
    """
    name = campaign.template
    declared = campaign.purpose if campaign.content else template_purpose(settings, name)
    if declared != campaign.purpose:
        raise TemplateProblem(
            f"template {name!r} is for {declared} mail, but the campaign is {campaign.purpose}"
        )
    prepared = prepare_campaign(settings, campaign)
    places: markup.FooterPlaces | None = None
    for sample in SAMPLE_RECIPIENTS:
        message = prepared.render_full(sample)
        if not message.subject:
            raise TemplateProblem(f"template {name!r}: the subject is empty")
        if any(ch in message.subject for ch in "\r\n"):
            raise TemplateProblem(f"template {name!r}: the subject contains a line break")
        if any((ch < " " and ch != "\t") or ch == "\x7f" for ch in message.subject):
            raise TemplateProblem(f"template {name!r}: the subject contains a control character")
        if len(message.subject) > MAX_SUBJECT:
            raise TemplateProblem(
                f"template {name!r}: the subject is longer than {MAX_SUBJECT} characters"
            )
        if campaign.purpose != "marketing":
            continue
        for part, body in (("body.html", message.html), ("body.txt", message.text)):
            unsubscribe, postal = sample.unsubscribe_url, settings.postal_address
            if part == "body.html":
                unsubscribe, postal = (
                    unsubscribe.translate(ESCAPE_ATTR),
                    postal.translate(ESCAPE_TEXT),
                )
            if unsubscribe not in body:
                raise TemplateProblem(
                    f"template {name!r}: {part} lacks the unsubscribe link "
                    "({{ unsubscribe_url }}), which marketing mail must carry"
                )
            if postal not in body:
                raise TemplateProblem(
                    f"template {name!r}: {part} lacks the postal address "
                    "({{ postal_address }}), which marketing mail must carry"
                )
        if places is None and campaign.content is not None:
            places = _footer_places(settings, campaign, campaign.content, sample)
        _check_footer_shows(settings, campaign, sample, message.html, places)
    return prepared


def _footer_places(
    settings: Settings, campaign: CampaignView, content: staff_text.StaffContent, sample: Recipient
) -> markup.FooterPlaces:
    """Where the layout puts the footer: the same layout rendered around an empty body."""
    empty = replace(content, body="", body_format="html", body_text=None, preheader="")
    view = replace(campaign, content=empty)
    paths, subject_source = _staff_sources(settings, view, empty)
    values = recipient_values(sample)
    reference = _render_full(_Renderer(settings, view), paths, subject_source, values).html
    return markup.footer_places(reference, sample.unsubscribe_url, settings.postal_address)


def _check_footer_shows(
    settings: Settings,
    campaign: CampaignView,
    sample: Recipient,
    html: str,
    places: markup.FooterPlaces | None,
) -> None:
    """Refuse a message whose footer is there as text but not as a reader sees it: the
    unsubscribe link not a link, hidden, or (staff content, ``places`` given) moved out of
    the layout's footer. The final HTML is read with lxml, as premailer and mail clients
    build it."""
    why = markup.footer_problem(html, sample.unsubscribe_url, settings.postal_address, places)
    if why:
        content = campaign.content
        where = (
            f"campaign {campaign.id} content version {content.version}"
            if content is not None
            else f"template {campaign.template!r}"
        )
        raise TemplateProblem(
            f"{where}: body.html: {why}; marketing mail must show the unsubscribe link and"
            " the postal address"
        )
