"""Text that staff type (subjects, bodies written in the console) rendered as data, not code.

Every piece of staff-written content goes through :func:`render_staff_text`: the project's
one sandbox (:mod:`dispatcher.sending.sandbox`: an ``ImmutableSandboxedEnvironment`` with no
globals and capped repetition) with a fixed set of names (:data:`STAFF_VARIABLES`). The text
is read by the sandbox's check before it runs, so ``{{ first_name }}`` works and
``{{ ''.__class__ }}``, an unknown name, or a method that would change a value are refused
with a message that says so.

Bodies written in Markdown become HTML here too (CommonMark, raw HTML disabled), and a text
part is made from the HTML when staff give none (:func:`text_from_html`).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from dispatcher.sending import limits, markup, sandbox

# What staff may use in a subject or body, and what each means (shown in the editor).
STAFF_VARIABLES = {
    "first_name": "the recipient's first name (empty when unknown)",
    "last_name": "the recipient's last name (empty when unknown)",
    "greeting_name": "the first name, or 'there' when unknown",
    "unsubscribe_url": "the recipient's signed unsubscribe link (also in the layout's footer)",
    "preferences_url": "the recipient's signed preferences link",
    "company_name": "our company name",
    "postal_address": "our postal address (also in the layout's footer)",
    "subject": "the message's subject (in the body only)",
}


@dataclass(frozen=True)
class StaffContent:
    """One saved version of a campaign's staff-written content, as rendering sees it."""

    version: int
    subject: str
    preheader: str
    body_format: str
    body: str
    body_text: str | None
    layout: str


class StaffTextProblem(ValueError):
    """Staff-written content that cannot be rendered; the message says where and why."""


@lru_cache(maxsize=2)
def _sandbox(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = sandbox.make_environment()
    env.autoescape = autoescape
    return env


def check_staff_text(source: str, *, part: str, names: frozenset[str]) -> None:
    """Read (not run) staff-written ``source`` with the sandbox's check: a name outside
    ``names`` or a reach for a ``_`` attribute is refused, naming ``part`` and the line."""
    try:
        if sandbox.check_source(_sandbox(False), source, where=part, allowed=names, staff=True):
            raise StaffTextProblem(f"{part}: staff content cannot extend or include a file")
    except sandbox.TemplateProblem as exc:
        raise StaffTextProblem(f"{exc} (refused by the sandbox)") from None


_BODY_NAMES = frozenset(STAFF_VARIABLES)
_SUBJECT_NAMES = _BODY_NAMES - {"subject"}


def check_staff_content(content: StaffContent) -> None:
    """Every staff-written part of ``content`` read by the sandbox's check before any of it
    renders (the subject cannot use ``subject``)."""
    check_staff_text(content.subject, part="the subject", names=_SUBJECT_NAMES)
    body = body_html_source(content.body_format, content.body)
    check_staff_text(body, part="the body", names=_BODY_NAMES)
    if content.body_text is not None:
        check_staff_text(content.body_text, part="the text part", names=_BODY_NAMES)


def render_staff_text(source: str, values: dict[str, Any], *, html: bool, part: str) -> str:
    """Check, then render, staff-written ``source`` in the sandbox with only the documented
    names (those of :data:`STAFF_VARIABLES` that ``values`` gives).

    ``part`` names the field in error messages ("the subject", "the body"). Raises
    :class:`StaffTextProblem` on a syntax error, an unknown name or anything the sandbox
    refuses (attribute access to internals, calling unsafe methods).
    """
    allowed = {k: v for k, v in values.items() if k in STAFF_VARIABLES}
    check_staff_text(source, part=part, names=frozenset(allowed))
    try:
        template = _sandbox(html).from_string(source)
        # Written out piece by piece and refused past the cap, so a loop cannot make more.
        return limits.render_capped(template.generate(allowed))
    except SecurityError as exc:
        raise StaffTextProblem(
            f"{part}: refused by the sandbox ({exc}); staff content may use only {_names()}"
        ) from None
    except UndefinedError as exc:
        raise StaffTextProblem(f"{part}: {exc.message}; it may use only {_names()}") from None
    except TemplateSyntaxError as exc:
        raise StaffTextProblem(f"{part}, line {exc.lineno}: {exc.message}") from None
    except TemplateError as exc:
        raise StaffTextProblem(f"{part}: {exc}") from None
    except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise StaffTextProblem(f"{part}: {type(exc).__name__}: {exc}") from None


def _names() -> str:
    return ", ".join(sorted(STAFF_VARIABLES))


def markdown_to_html(source: str) -> str:
    """CommonMark to HTML with raw HTML disabled; Jinja tags pass through as text."""
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark", {"html": False}).render(source)
    # markdown-it escapes quotes in text; undo it inside {{ … }} and {% … %} so that a
    # string literal in a tag ("{{ 'x' }}") reaches Jinja as written.
    return re.sub(
        r"(\{\{.*?\}\}|\{%.*?%\})",
        lambda m: html.unescape(m.group(1)),
        rendered,
        flags=re.DOTALL,
    )


def body_html_source(body_format: str, body: str) -> str:
    """The HTML source (still a Jinja template) of a body written as ``body_format``."""
    if body_format == "markdown":
        return markdown_to_html(body)
    if body_format == "html":
        return body
    raise StaffTextProblem(f"unknown body format {body_format!r}: use html or markdown")


def check_body_markup(rendered_html: str) -> None:
    """Refuse a body that would leave an element or comment open around the layout's footer
    (which would let it hide the unsubscribe link), carries page-level, raw-text or embedding
    elements, or styles something out of sight (:mod:`dispatcher.sending.markup`)."""
    try:
        markup.check_body_markup(rendered_html)
    except markup.BodyMarkupProblem as exc:
        raise StaffTextProblem(f"the body: {exc}") from None


_BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "tr", "blockquote"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str | None] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self.skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in _BLOCK:
            self.out.append("\n\n")
        if tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.out.append("\n\n")
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and not href.startswith("#"):
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def text_from_html(rendered_html: str) -> str:
    """A plain-text part from rendered HTML: paragraphs, list items and links kept."""
    parser = _Text()
    parser.feed(str(rendered_html))
    parser.close()
    text = "".join(parser.out)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


__all__ = [
    "STAFF_VARIABLES",
    "StaffContent",
    "StaffTextProblem",
    "body_html_source",
    "check_body_markup",
    "check_staff_content",
    "check_staff_text",
    "markdown_to_html",
    "render_staff_text",
    "text_from_html",
]
