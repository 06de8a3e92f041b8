"""The sandbox every staff-written template renders in: what staff type is data, never code.

Subjects, bodies, layouts, previews and test sends all render in Jinja2's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with no globals at all (no ``cycler``,
``joiner``, ``lipsum``, ``range``, ``namespace``, ``dict``), so a template sees only the names
in :data:`TEMPLATE_NAMES`. Before a template is used it is read, not run
(:func:`check_source`): a name outside that set, or a reach for an attribute or key starting
with ``_`` (the way out of every sandbox escape: ``__class__``, ``__globals__``, ``__init__``),
is refused with the field and line at fault, even inside a branch that would not be taken.
At render time the sandbox refuses what the reading missed (an unsafe attribute reached
indirectly), and caps the size of everything a template makes (repetition, joins,
padding, formatting, filters, loop steps and the output itself:
:mod:`dispatcher.sending.limits`) so that a template cannot make a gigabyte.

The staff console renders what staff type in a browser through :func:`check_template` and
:func:`render_staff_text`; campaign templates go through :mod:`dispatcher.sending.rendering`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    FunctionLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
    select_autoescape,
)
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from dispatcher.sending import limits
from dispatcher.sending.limits import MAX_OUTPUT as MAX_OUTPUT  # where it was
from dispatcher.settings import Settings

if TYPE_CHECKING:  # staff_text uses this module's sandbox, so it is imported for types only
    from dispatcher.sending.staff_text import StaffContent

# Every name a template may use, and what it is. The campaign's names are the same for every
# recipient; the recipient's fields differ per message; ``subject`` is the rendered subject,
# known to the bodies only.
CAMPAIGN_NAMES: dict[str, str] = {
    "campaign": "the campaign: campaign.id, .name, .subject, .purpose, .template",
    "company_name": "the company's name",
    "postal_address": "the company's postal address",
    "site_url": "the company's web site (links to the catalogue, terms ...)",
    "base_url": "the root of the recipient pages (unsubscribe, preferences)",
    "reply_address": "where a reply to the message goes",
    "marketing": "true for marketing mail, false for a service notice",
}
RECIPIENT_NAMES: dict[str, str] = {
    "first_name": "the recipient's first name, or empty",
    "last_name": "the recipient's last name, or empty",
    "greeting_name": "the first name, or 'there' when there is none",
    "unsubscribe_url": "the recipient's signed one-click unsubscribe link",
    "preferences_url": "the recipient's signed preferences link",
}
BODY_NAMES: dict[str, str] = {"subject": "the rendered subject (bodies only)"}
TEMPLATE_NAMES: dict[str, str] = {**CAMPAIGN_NAMES, **RECIPIENT_NAMES, **BODY_NAMES}
SUBJECT_NAMES = frozenset(CAMPAIGN_NAMES) | frozenset(RECIPIENT_NAMES)
BODY_TEMPLATE_NAMES = frozenset(TEMPLATE_NAMES)
# Names Jinja itself gives a template: loop variables, macros' callers, ``self`` for blocks.
_JINJA_NAMES = frozenset({"loop", "self", "super", "caller", "varargs", "kwargs"})

_MAX_EXPONENT = 64


class TemplateProblem(Exception):
    """A template that cannot be used as it is; the message names the template, the field or
    file, the line and why."""


@dataclass(frozen=True)
class CampaignView:
    """What a template may know about its campaign."""

    id: int
    name: str
    subject: str
    purpose: str
    template: str
    # Staff-written content (the console); None: the folder ``template`` names.
    content: StaffContent | None = None


@dataclass(frozen=True)
class Recipient:
    """What a template may know about its recipient."""

    first_name: str | None
    last_name: str | None
    unsubscribe_url: str
    preferences_url: str


def campaign_context(settings: Settings, campaign: CampaignView) -> dict[str, Any]:
    """The values of :data:`CAMPAIGN_NAMES` for one campaign."""
    return {
        "campaign": campaign,
        "company_name": settings.company_name,
        "postal_address": settings.postal_address,
        "site_url": settings.site_url,
        "base_url": settings.base_url,
        "reply_address": parseaddr(settings.sender)[1],
        "marketing": campaign.purpose == "marketing",
    }


def recipient_values(recipient: Recipient) -> dict[str, str]:
    """The values of :data:`RECIPIENT_NAMES` for one recipient."""
    return {
        "first_name": recipient.first_name or "",
        "last_name": recipient.last_name or "",
        "greeting_name": recipient.first_name or "there",
        "unsubscribe_url": recipient.unsubscribe_url,
        "preferences_url": recipient.preferences_url,
    }


class _Sandbox(ImmutableSandboxedEnvironment):
    """No globals, nothing mutable, no ``_`` attributes, nothing bigger than the caps of
    :mod:`dispatcher.sending.limits`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"a power above {_MAX_EXPONENT} is not allowed in a template")
        limits.check_binop(op, left, right)
        if op in _BINOPS:
            return limits.check_weight(_BINOPS[op](left, right), "the result")
        return super().call_binop(context, op, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """A call from a template: a string method's result checked before it is made."""
        args = limits.check_method_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return limits.capped_result(result, "the result of a call")

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parsed, then rewritten so that ``~`` and loops are counted (limits.Bounded)."""
        tree = limits.Bounded().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree


_BINOPS = {"*": operator.mul, "+": operator.add, "%": operator.mod}


def _finalize(value: Any) -> Any:
    return limits.check_weight(value, "a value written out")


def make_environment(loader: BaseLoader | None = None) -> ImmutableSandboxedEnvironment:
    """The sandbox, with no global names; HTML files autoescaped, strings not; every filter
    capped, and what a template writes out weighed before it is turned into text."""
    env = _Sandbox(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    env.globals.clear()
    env.filters = {name: limits.capped_filter(name, f) for name, f in env.filters.items()}
    env.filters[limits.CONCAT_FILTER] = limits.capped_concat
    env.filters[limits.STEPS_FILTER] = limits.counted_steps
    return env


# Staff-written bodies sit in a layout's content block. The wrapper is ours (trusted, and
# rendered in the sandbox like every file); the staff text itself is rendered separately by
# :mod:`dispatcher.sending.staff_text` and passed in as the value ``staff_body``.
STAFF_WRAPPER_NAMES = frozenset({"staff_body", "staff_preheader"})
_LAYOUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_STAFF_WRAPPERS = {
    "body.html": (
        '{% extends "email/LAYOUT/base.html" %}{% block content %}'
        '{% if staff_preheader %}<div class="preheader" style="display:none;max-height:0;'
        'overflow:hidden">{{ staff_preheader }}</div>{% endif %}'
        "{{ staff_body }}{% endblock %}"
    ),
    "body.txt": '{% extends "email/LAYOUT/base.txt" %}{% block content %}{{ staff_body }}'
    "{% endblock %}",
}


def _staff_wrapper(name: str) -> str | None:
    """``staff/<layout>/body.html`` (or ``.txt``): the layout around a staff-written body."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "staff" or parts[2] not in _STAFF_WRAPPERS:
        return None
    if not _LAYOUT_NAME.fullmatch(parts[1]):
        return None
    return _STAFF_WRAPPERS[parts[2]].replace("LAYOUT", parts[1])


@lru_cache(maxsize=8)
def file_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    """The sandbox over the template files, plus the ``staff/<layout>/`` wrappers."""
    return make_environment(
        ChoiceLoader([FunctionLoader(_staff_wrapper), FileSystemLoader(str(templates_dir))])
    )


def usable_names(allowed: Iterable[str]) -> str:
    return ", ".join(sorted(allowed))


def check_source(
    env: ImmutableSandboxedEnvironment,
    source: str,
    *,
    where: str,
    allowed: Iterable[str],
    filename: str | None = None,
    staff: bool = False,
) -> list[str]:
    """Read ``source`` without running it; refuse a name outside ``allowed`` or a reach for
    a ``_`` attribute, naming ``where`` (a field or file) and the line. ``staff=True`` for
    text typed in the console, which may not use :data:`STAFF_REFUSED` either. Returns the
    templates it extends or includes, for the caller to read in turn."""
    try:
        ast = env.parse(source, filename=filename)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"{where} line {exc.lineno}: {exc.message}") from None
    if staff:
        _refuse_staff_statements(ast, where)
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            key: object = node.attr
        elif isinstance(node, nodes.Getitem):
            key = _const(node.arg)
        else:  # ``x|attr('__class__')`` is ``x.__class__`` spelt differently
            assert isinstance(node, nodes.Filter)
            key = _const(node.args[0]) if node.name == "attr" and node.args else None
        if isinstance(key, str) and key.startswith("_"):
            raise TemplateProblem(
                f"{where} line {node.lineno}: {key!r} is not something a template may reach for"
            )
    allowed_set = frozenset(allowed) | _JINJA_NAMES
    unknown = meta.find_undeclared_variables(ast) - allowed_set
    if unknown:
        first = min(
            (n for n in ast.find_all(nodes.Name) if n.name in unknown),
            key=lambda n: n.lineno,
        )
        raise TemplateProblem(
            f"{where} line {first.lineno}: {first.name!r} is undefined"
            f" (a template may use: {usable_names(allowed)})"
        )
    return [name for name in meta.find_referenced_templates(ast) if name is not None]


# What text typed in the console has no use for. Macros and call, filter and set blocks
# gather their output in memory before anything counts it (the running cap of
# limits.render_capped sees only what is written out); autoescape blocks and ``|safe`` would
# let a value's own markup (a recipient's name) into the message, around the footer too.
STAFF_REFUSED: dict[type[nodes.Node], str] = {
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.AssignBlock: "{% set %}…{% endset %}",
    nodes.ScopedEvalContextModifier: "{% autoescape %}",
    nodes.EvalContextModifier: "{% autoescape %}",
}


def _refuse_staff_statements(ast: nodes.Template, where: str) -> None:
    kinds: tuple[type[nodes.Node], ...] = (*STAFF_REFUSED, nodes.Filter)
    for node in ast.find_all(kinds):
        if isinstance(node, nodes.Filter):
            if node.name != "safe":
                continue
            what = "|safe"
        else:
            what = STAFF_REFUSED[type(node)]
        raise TemplateProblem(f"{where} line {node.lineno}: {what} is not allowed in staff text")


def _const(node: nodes.Node) -> object:
    return node.value if isinstance(node, nodes.Const) else None


def sample_context(settings: Settings) -> dict[str, Any]:
    """Values for every name, as a sample recipient of a sample campaign would see them."""
    campaign = CampaignView(0, "Sample campaign", "Sample subject", "marketing", "")
    recipient = recipient_values(
        Recipient(
            "Sample",
            "Recipient",
            f"{settings.base_url}/u/SAMPLE",
            f"{settings.base_url}/preferences/SAMPLE",
        )
    )
    return {**campaign_context(settings, campaign), **recipient, "subject": "Sample subject"}


def check_template(source: str, *, field: str, subject: bool = False) -> None:
    """Refuse (:class:`TemplateProblem` naming ``field`` and the line) a template typed by
    staff that uses a name outside :data:`TEMPLATE_NAMES` or reaches for a ``_`` attribute.
    ``subject=True`` for a subject line (which cannot use ``subject``). Nothing is run."""
    env = make_environment()
    allowed = SUBJECT_NAMES if subject else BODY_TEMPLATE_NAMES
    if check_source(env, source, where=field, allowed=allowed, staff=True):
        raise TemplateProblem(f"{field}: a template typed here cannot extend or include a file")


def render_staff_text(
    settings: Settings,
    source: str,
    *,
    field: str,
    html: bool = False,
    subject: bool = False,
    values: Mapping[str, Any] | None = None,
) -> str:
    """Check, then render in the sandbox, a template typed by staff (a subject, a body) with a
    sample recipient's values (or ``values``); ``html=True`` escapes the values as HTML.
    Raises :class:`TemplateProblem` naming ``field`` and the line; never runs staff code."""
    check_template(source, field=field, subject=subject)
    env = make_environment()
    env.autoescape = html
    context = {**sample_context(settings), **(values or {})}
    try:
        return limits.render_capped(env.from_string(source).generate(context))
    except (SecurityError, UndefinedError) as exc:
        raise TemplateProblem(f"{field}: {exc}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{field}: {exc}") from None
