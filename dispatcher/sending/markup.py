"""What a staff-written HTML body may carry, and where a rendered message's footer must stay.

Every marketing message carries the layout's footer: the unsubscribe link and the postal
address. A body is markup typed by staff, placed by the layout above that footer; it must
not be able to swallow, hide or cover it. Two checks keep it so:

* :func:`check_body_markup` reads a rendered staff body before it goes into its layout. It
  refuses what different HTML parsers read differently (raw-text and foreign elements, bogus
  comments and declarations), page-level and embedding elements, an element or comment left
  open, the ``hidden`` attribute, and inline CSS outside a short allow-list. Python's
  ``html.parser`` reads the body, so anything it would read differently from libxml2 (which
  premailer uses) or a browser is refused rather than interpreted.
* :func:`footer_problem` reads the final message (after CSS inlining) with lxml, as premailer
  and mail clients build it: the unsubscribe link must be an ``<a href>`` where the layout
  puts it, and neither it nor the postal address may sit under a hidden ancestor. It is the
  backstop for whatever the first check did not foresee.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # lxml is loaded only where a message is checked, never by senders
    from lxml.html import HtmlElement


class BodyMarkupProblem(ValueError):
    """A staff body whose markup is refused; the message says what and why."""


_VOID = frozenset(
    {"area", "br", "col", "hr", "img", "source", "track", "wbr"}
    | {"base", "embed", "input", "link", "meta"}  # void, and refused below
)
# Elements a body has no business carrying. Page-level and embedding elements could replace
# the layout or load something; raw-text elements (xmp, noembed, noframes, noscript,
# textarea, plaintext, title, script, style) and foreign or template content (svg, math,
# template) are read differently by Python's html.parser, libxml2 and browsers, which is how
# a body could open a hidden element around the footer while this check sees it closed;
# forms and their controls swallow or reorder what follows them.
_REFUSED = frozenset(
    {"html", "head", "body", "title", "style", "script", "base", "meta", "link"}
    | {"xmp", "noembed", "noframes", "noscript", "textarea", "plaintext", "template"}
    | {"svg", "math", "iframe", "object", "embed", "frameset", "frame", "applet", "param"}
    | {"form", "input", "button", "select", "option", "optgroup", "datalist", "dialog"}
)
# Elements a body may leave for the layout's ``</td>`` to close (HTML's optional end tags).
_MAY_STAY_OPEN = frozenset({"p", "li", "td", "tr", "th", "dt", "dd"})

# Inline CSS a body may use: typography, colour, spacing, borders and sizes; nothing that
# takes an element out of the flow (position other than static/relative, offsets, floats,
# transforms, z-index) or makes it invisible (visibility, opacity, clip, overflow). An
# allow-list, because the ways CSS can hide or cover are many and grow; these are the
# properties mail clients honour anyway.
_SIDES = ("", "-top", "-right", "-bottom", "-left")
_CSS_PROPERTIES = frozenset(
    {"color", "background-color", "font", "font-family", "font-size", "font-style"}
    | {"font-weight", "font-variant", "line-height", "letter-spacing", "word-spacing"}
    | {"text-align", "text-decoration", "text-transform", "vertical-align", "white-space"}
    | {"word-break", "word-wrap", "overflow-wrap", "direction", "list-style"}
    | {"list-style-type", "list-style-position", "table-layout", "border-collapse"}
    | {"border-spacing", "width", "min-width", "max-width", "height", "min-height"}
    | {"display", "position"}
    | {f"{box}{side}" for box in ("margin", "padding") for side in _SIDES}
    | {f"border{side}{part}" for side in _SIDES for part in ("", "-width", "-style", "-color")}
    | {"border-radius"}
)
_CSS_KEYWORDS = {
    "display": frozenset(
        {"block", "inline", "inline-block", "list-item", "table", "table-row", "table-cell"}
        | {"table-row-group", "table-header-group", "table-footer-group", "table-caption"}
        | {"flex", "inline-flex"}
    ),
    "position": frozenset({"static", "relative"}),
}
_COLOUR_FUNCTION = re.compile(r"\b(?:rgba?|hsla?)\(\s*[\d\s.,%/]*\)", re.IGNORECASE)
_NEGATIVE = re.compile(r"(?<![\w#-])-\s*\.?\d")
_ZERO = re.compile(r"^[+]?0*\.?0*(?:[a-z%]+)?$")
_LETTER = re.compile(r"[A-Za-z]")
# A comment all parsers end in the same place: HTML's "valid comment", without ``--``.
_COMMENT = re.compile(r"<!--(?!-?>)((?:(?!--).)*?)-->", re.DOTALL)


def check_body_markup(rendered_html: str) -> None:
    """Refuse (:class:`BodyMarkupProblem`) a rendered staff body that could hide or cover the
    layout's footer: one that leaves an element or comment open around it, carries an element
    parsers disagree about or that belongs to a page, or styles something out of sight."""
    _check_tokens(rendered_html)
    parser = _Balance()
    parser.feed(rendered_html)
    parser.close()
    if parser.problem:
        raise BodyMarkupProblem(parser.problem)
    unclosed = [t for t in parser.open if t not in _MAY_STAY_OPEN]
    if unclosed:
        raise BodyMarkupProblem(f"<{unclosed[-1]}> is never closed")


def _check_tokens(source: str) -> None:
    """Refuse comments, declarations and processing instructions that html.parser ends in
    another place than libxml2 and browsers do (``--!>``, ``<![CDATA[``, ``</ x>``)."""
    if source.count("<!--") != source.count("-->"):
        raise BodyMarkupProblem("an HTML comment is left open")
    at = source.find("<")
    while at != -1:
        rest = source[at + 1 : at + 2]
        if source.startswith("<!--", at):
            comment = _COMMENT.match(source, at)
            if comment is None:
                raise BodyMarkupProblem(
                    "an HTML comment must be <!-- text --> with no '--' inside it"
                )
            if re.search(r"[<>]|^\s*\[", comment.group(1)):
                # Outlook reads conditional comments (<!--[if mso]>…) as markup.
                raise BodyMarkupProblem(
                    "an HTML comment may not hold markup or an Outlook condition ([if …])"
                )
            at = comment.end()
        elif rest == "!":
            raise BodyMarkupProblem("a <!…> declaration (DOCTYPE, CDATA) is not allowed in a body")
        elif rest == "?":
            raise BodyMarkupProblem("a <?…> processing instruction is not allowed in a body")
        elif rest == "/" and not _LETTER.match(source, at + 2):
            raise BodyMarkupProblem("'</' must be followed by the name of an element")
        at = source.find("<", at + 1)


class _Balance(HTMLParser):
    """Elements opened and closed, the first refused element or attribute, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problem: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._refuse(tag, attrs)
        if tag not in _VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._refuse(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            while self.open and self.open.pop() != tag:
                pass
        elif tag not in _VOID:
            self.problem = self.problem or f"</{tag}> closes an element the body did not open"

    def _refuse(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.problem:
            return
        if tag in _REFUSED:
            self.problem = f"a <{tag}> element is not allowed in a body"
            return
        for name, value in attrs:
            if name == "hidden":
                self.problem = f"<{tag} hidden>: the hidden attribute is not allowed in a body"
            elif name == "style":
                why = css_problem(value or "")
                if why:
                    self.problem = f'<{tag} style="{value}">: {why}'
            if self.problem:
                return


def css_problem(style: str) -> str | None:
    """Why an inline ``style`` may not be used in a body (None when it may): a property
    outside the allow-list, a value that hides, takes out of the flow or pulls over its
    neighbours, or something the allow-list cannot read (escapes, comments, functions)."""
    if "\\" in style or "/*" in style:
        return "escapes and comments are not allowed in an inline style"
    for declaration in style.split(";"):
        if not declaration.strip():
            continue
        name, colon, value = declaration.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if not colon or not name or not value:
            return f"cannot read {declaration.strip()!r} as a CSS declaration"
        value = re.sub(r"\s*!\s*important$", "", value)
        if name not in _CSS_PROPERTIES:
            return (
                f"the CSS property {name!r} is not allowed in a body (it may use: colours,"
                " fonts, text, spacing, borders, sizes, display and position static/relative)"
            )
        why = _css_value_problem(name, value)
        if why:
            return why
    return None


def _css_value_problem(name: str, value: str) -> str | None:
    if "(" in _COLOUR_FUNCTION.sub("", value):
        return f"{name}: {value}: CSS functions other than colours are not allowed in a body"
    keywords = _CSS_KEYWORDS.get(name)
    if keywords is not None and value not in keywords:
        allowed = ", ".join(sorted(keywords))
        return f"{name}: {value} is not allowed in a body (it may use: {allowed})"
    if _NEGATIVE.search(value):
        return f"{name}: {value}: negative values are not allowed in a body"
    if name == "font-size" and _ZERO.match(value):
        return f"{name}: {value}: text of size zero is not allowed in a body"
    return None


# Elements whose content a mail client does not show (or shows as text).
_UNSHOWN = frozenset(
    {"head", "title", "script", "style", "template", "noscript", "noembed", "noframes"}
    | {"xmp", "textarea", "plaintext", "select", "option", "object", "iframe", "svg", "math"}
    | {"frameset", "frame", "dialog"}
)


def _declarations(style: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for declaration in style.split(";"):
        name, _, value = declaration.partition(":")
        value = re.sub(r"\s*!\s*important$", "", value.strip().lower())
        out[name.strip().lower()] = re.sub(r"\s+", " ", value)
    return out


def hidden_by(element: HtmlElement) -> str | None:
    """What hides ``element`` (itself or an ancestor) from a reader, or None."""
    node: HtmlElement | None = element
    while node is not None:
        tag = node.tag if isinstance(node.tag, str) else ""
        if tag in _UNSHOWN or (tag == "details" and node.get("open") is None):
            return f"it is inside a <{tag}> element"
        if node.get("hidden") is not None:
            return f"a <{tag}> around it has the hidden attribute"
        css = _declarations(node.get("style") or "")
        overflow_hidden = css.get("overflow") in ("hidden", "clip")
        for name, value in css.items():
            hides = (
                (name == "display" and value == "none")
                or (name == "visibility" and value in ("hidden", "collapse"))
                or (name in ("opacity", "font-size") and bool(_ZERO.match(value)))
                or (name in ("height", "max-height") and overflow_hidden and _ZERO.match(value))
                or (name == "position" and value in ("absolute", "fixed"))
            )
            if hides:
                return f'a <{tag}> around it has "{name}: {value}"'
        node = node.getparent()
    return None


def _path(element: HtmlElement) -> tuple[tuple[str, str], ...]:  # a _Place
    """Where ``element`` sits: tag and class of it and each ancestor, from the root."""
    steps = [(str(e.tag), e.get("class") or "") for e in element.iterancestors()]
    return (*reversed(steps), (str(element.tag), element.get("class") or ""))


def _links(tree: HtmlElement, url: str) -> Iterator[HtmlElement]:
    return (a for a in tree.iter("a") if (a.get("href") or "").strip() == url)


def _holders(tree: HtmlElement, text: str) -> Iterator[HtmlElement]:
    """The innermost elements whose text contains ``text``."""
    for element in tree.iter():
        if not isinstance(element.tag, str) or text not in element.text_content():
            continue
        children = (child for child in element if isinstance(child.tag, str))
        if not any(text in child.text_content() for child in children):
            yield element


_Place = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class FooterPlaces:
    """Where a layout puts the unsubscribe link and the postal address (see :func:`_path`)."""

    link: frozenset[_Place]
    postal: frozenset[_Place]


def footer_places(reference: str, unsubscribe_url: str, postal_address: str) -> FooterPlaces:
    """Where the footer sits in ``reference``: the layout rendered around an empty body."""
    from lxml import html as lxml_html

    tree = lxml_html.document_fromstring(reference)
    return FooterPlaces(
        link=frozenset(_path(e) for e in _links(tree, unsubscribe_url)),
        postal=frozenset(_path(e) for e in _holders(tree, postal_address)),
    )


def footer_problem(
    document: str,
    unsubscribe_url: str,
    postal_address: str,
    places: FooterPlaces | None = None,
) -> str | None:
    """Why the rendered message ``document`` fails to show its footer (None when it shows).

    Read with lxml as premailer and mail clients build it: an ``<a>`` whose ``href`` is the
    unsubscribe link, and an element carrying the postal address, neither under a hidden
    ancestor. With ``places`` (:func:`footer_places` of the same layout) both must also sit
    exactly where the layout puts them, so a body cannot move them into itself."""
    from lxml import html as lxml_html

    tree = lxml_html.document_fromstring(document)
    for what, found, where in (
        ("the unsubscribe link", _links(tree, unsubscribe_url), places and places.link),
        ("the postal address", _holders(tree, postal_address), places and places.postal),
    ):
        candidates = list(found)
        if places is not None:
            candidates = [e for e in candidates if _path(e) in (where or ())]
            if not candidates:
                return f"{what} is not in the layout's footer any more (the body moved it)"
        if not candidates:
            return f"{what} is not an element of the message"
        reasons = [hidden_by(e) for e in candidates]
        if all(reasons):
            return f"{what} is hidden: {reasons[0]}"
    return None
