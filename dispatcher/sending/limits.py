"""How much a template may make: the sandbox's caps on size and steps.

A template typed by staff is checked on save, synchronously, in the console's worker; a
template that asks for a gigabyte must be refused before the gigabyte exists. Jinja's
sandbox stops code, not size, so every way a template makes something big is capped here
before it runs: repetition and concatenation (``*``, ``+``, ``~``), padding and formatting
(``'x'.ljust(n)``, ``'{:>n}'.format``, ``'%ns' % x``, ``|center``, ``|indent``, ``|format``,
``|wordwrap``, ``|truncate``), joins and replacements, batches and slices, and loop steps
(nested loops multiply). Whatever a value weighs (its characters, or its items and theirs)
must stay under :data:`MAX_OUTPUT`; :func:`render_capped` bounds what a render writes.
"""

from __future__ import annotations

import functools
import inspect
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2 import nodes, pass_context, pass_eval_context
from jinja2.runtime import Context
from jinja2.sandbox import SecurityError
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, soft_str

# Generous for any mail, small enough that no template can exhaust a worker's memory.
MAX_OUTPUT = 1_000_000
# Loop iterations in one render, all loops together (nested loops multiply).
MAX_LOOP_STEPS = 100_000
# Rows a |batch or |slice may make.
MAX_PARTS = 10_000

_TOO_BIG = f"longer than {MAX_OUTPUT:,} characters"
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def weight(value: Any, budget: int = MAX_OUTPUT) -> int:
    """A value's size as a template could write it out: characters of a string, items of
    a container plus their own weight. Counting stops once past ``budget``."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, Mapping):
        value = [*value.keys(), *value.values()]
    if not isinstance(value, list | tuple | set | frozenset):
        return 0
    total = len(value)
    for item in value:
        if total > budget:
            break
        total += weight(item, budget - total)
    return total


def check_weight(value: Any, what: str) -> Any:
    """``value`` itself, or :class:`SecurityError` when it weighs more than the cap."""
    if weight(value) > MAX_OUTPUT:
        raise SecurityError(f"{what} would be {_TOO_BIG}, more than a template may make")
    return value


def bounded(items: Iterable[Any], what: str, extra: int = 0) -> Iterator[Any]:
    """``items`` one by one, refused once they (and ``extra`` per item) weigh past the cap."""
    total = 0
    for item in items:
        total += weight(item) + extra
        if total > MAX_OUTPUT:
            raise SecurityError(f"{what} would be {_TOO_BIG}, more than a template may make")
        yield item


def _refuse_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise SecurityError(f"{what} would be {_TOO_BIG}, more than a template may make")


def check_format_spec(template: str) -> None:
    """Refuse a ``str.format`` string whose widths and precisions add up past the cap, or
    that takes a width from an argument (``{:{n}}``), which cannot be checked beforehand."""
    total = 0
    for _, _, spec, _ in string.Formatter().parse(template):
        if not spec:
            continue
        if "{" in spec:
            raise SecurityError("a format width taken from an argument is not allowed")
        total += sum(int(n) for n in re.findall(r"\d+", spec))
    _refuse_size(total, "the formatted text")


def check_printf(template: str) -> None:
    """The same for ``%`` formatting: no ``*`` widths, widths and precisions under the cap."""
    total = 0
    for width, precision in _PRINTF.findall(template):
        if "*" in (width, precision):
            raise SecurityError("a '*' width in % formatting is not allowed in a template")
        total += int(width or 0) + int(precision or 0)
    _refuse_size(total, "the formatted text")


def check_binop(op: str, left: Any, right: Any) -> None:
    """``*``, ``+`` and ``%`` on sized values: the result must stay under the cap."""
    if op == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                _refuse_size(weight(seq) * times, "a repetition that large")
    elif op == "+" and isinstance(left, str | bytes | list | tuple):
        _refuse_size(weight(left) + weight(right), "the joined value")
    elif op == "%" and isinstance(left, str):
        check_printf(left)


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def check_method_call(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Before a template calls a method of a string: refuse a call whose result would pass
    the cap. Returns the arguments to call with (a join's items are counted as they come)."""
    method = getattr(method, "__wrapped__", method)  # the sandbox's str.format wrapper
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if not isinstance(owner, str | bytes):
        return args
    if name in ("center", "ljust", "rjust", "zfill") and args:
        _refuse_size(_int(args[0]), f"{name}()'s result")
    elif name == "expandtabs":
        size = _int(args[0] if args else kwargs.get("tabsize", 8))
        tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
        _refuse_size(len(owner) + tabs * size, "expandtabs()'s result")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        if isinstance(old, str | bytes) and isinstance(new, str | bytes):
            times = len(owner) + 1 if not old else owner.count(old)  # type: ignore[arg-type]
            _refuse_size(len(owner) + times * max(len(new) - len(old), 0), "replace()'s result")
    elif name == "join" and args:
        return (bounded(args[0], "the joined text", extra=len(owner)), *args[1:])
    elif name in ("format", "format_map") and isinstance(owner, str):
        check_format_spec(owner)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((weight(v) for v in args[0].values()), default=1)
        _refuse_size(len(owner) * max(longest, 1), "translate()'s result")
    return args


# Filters whose arguments say how big their result is: checked before they run.
def _pre_center(a: dict[str, Any]) -> None:
    _refuse_size(len(soft_str(a["value"])) + _int(a["width"]), "|center's result")


def _pre_indent(a: dict[str, Any]) -> None:
    width = a["width"]
    step = len(width) if isinstance(width, str) else _int(width)
    lines = soft_str(a["s"]).count("\n") + 1
    _refuse_size(len(soft_str(a["s"])) + lines * step, "|indent's result")


def _pre_format(a: dict[str, Any]) -> None:
    check_printf(soft_str(a["value"]))


def _pre_wordwrap(a: dict[str, Any]) -> None:
    text, width = soft_str(a["s"]), max(_int(a["width"]), 1)
    wrap = a["wrapstring"] if isinstance(a["wrapstring"], str) else "\n"
    breaks = len(text) // width + text.count("\n") + 1
    _refuse_size(len(text) + breaks * len(wrap), "|wordwrap's result")


def _pre_truncate(a: dict[str, Any]) -> None:
    end = a["end"] if isinstance(a["end"], str) else ""
    _refuse_size(min(len(soft_str(a["s"])), _int(a["length"])) + len(end), "|truncate's result")


def _pre_join(a: dict[str, Any]) -> None:
    a["value"] = bounded(a["value"], "the joined text", extra=len(soft_str(a["d"])))


def _pre_replace(a: dict[str, Any]) -> None:
    check_method_call(soft_str(a["s"]).replace, (soft_str(a["old"]), soft_str(a["new"])), {})


def _pre_parts(a: dict[str, Any]) -> None:
    count = _int(a.get("linecount", a.get("slices")))
    if count > MAX_PARTS:
        raise SecurityError(f"more than {MAX_PARTS:,} rows is not allowed in a template")


def _pre_sum(a: dict[str, Any]) -> None:
    a["iterable"] = bounded(a["iterable"], "the sum")


_PRECHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "format": _pre_format,
    "wordwrap": _pre_wordwrap,
    "truncate": _pre_truncate,
    "join": _pre_join,
    "replace": _pre_replace,
    "batch": _pre_parts,
    "slice": _pre_parts,
    "sum": _pre_sum,
}


def capped_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` with its value and result under the cap, and, for the filters that
    take a size, the size checked before it runs."""
    signature = inspect.signature(original)
    precheck = _PRECHECKS.get(name)
    passes = 1 if hasattr(original, "jinja_pass_arg") else 0
    # Jinja's sync/async wrappers take an eval context their signature does not show.
    hidden = passes if not hasattr(inspect.unwrap(original), "jinja_pass_arg") else 0

    @functools.wraps(original)
    def capped(*args: Any, **kwargs: Any) -> Any:
        if len(args) > passes:
            check_weight(args[passes], f"the value given to |{name}")
        if precheck is not None:
            try:
                bound = signature.bind(*args[hidden:], **kwargs)
            except TypeError:
                return original(*args, **kwargs)  # Jinja says what is wrong with the call
            bound.apply_defaults()
            precheck(bound.arguments)
            args, kwargs = (*args[:hidden], *bound.args), bound.kwargs
        return capped_result(original(*args, **kwargs), f"|{name}'s result")

    return capped


def capped_result(value: Any, what: str) -> Any:
    """A result checked against the cap; an iterator is checked as it is consumed."""
    if isinstance(value, Iterator) and not isinstance(value, str | bytes):
        return bounded(value, what)
    return check_weight(value, what)


@pass_eval_context
def capped_concat(eval_ctx: nodes.EvalContext, items: list[Any]) -> str:
    """``a ~ b ~ c`` (what Jinja's own concatenation does), refused past the cap before the
    pieces are joined."""
    pieces = [soft_str(piece) for piece in bounded(items, "the joined text")]
    if eval_ctx.autoescape and any(hasattr(p, "__html__") for p in pieces):
        return Markup("").join(pieces)
    return "".join(pieces)


@pass_context
def counted_steps(context: Context, items: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, counted against the render's :data:`MAX_LOOP_STEPS`."""
    for item in items:
        steps: int = getattr(context, "_loop_steps", 0) + 1
        if steps > MAX_LOOP_STEPS:
            raise SecurityError(f"more than {MAX_LOOP_STEPS:,} loop steps in one render")
        context._loop_steps = steps  # type: ignore[attr-defined]
        yield item


# The names under which the two helpers above reach templates (see _Bounded).
CONCAT_FILTER = "capped_concat"
STEPS_FILTER = "counted_steps"


class Bounded(NodeTransformer):
    """Rewrites a parsed template so that ``~`` and every loop go through the caps."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802 (Jinja's naming)
        self.generic_visit(node)
        joined = nodes.Filter(nodes.List(node.nodes), CONCAT_FILTER, [], [], None, None)
        return joined.set_lineno(node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, STEPS_FILTER, [], [], None, None).set_lineno(
            node.iter.lineno
        )
        return node


def render_capped(chunks: Iterable[str]) -> str:
    """A template's output (``template.generate(...)``), refused as soon as it passes the
    cap: what a loop writes is counted as it is written, not once it all exists."""
    written, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise SecurityError(f"the rendered text would be {_TOO_BIG}")
        written.append(chunk)
    return "".join(written)
