"""The sandbox's caps on size and steps (dispatcher/sending/limits.py): a template typed by
staff is refused before it makes more than MAX_OUTPUT, whichever way it asks."""

from __future__ import annotations

import pytest
from jinja2.sandbox import SecurityError

from dispatcher.sending import staff_text
from dispatcher.sending.sandbox import MAX_OUTPUT, file_environment, sample_context
from dispatcher.settings import Settings
from tests.conftest import settings_for

BIG = "{% set a = 'x' * 999999 %}"


def render(source: str) -> str:
    values = {"first_name": "Ann", "greeting_name": "Ann"}
    return staff_text.render_staff_text(source, values, html=True, part="the body")


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x'|center(5000000) }}",
        "{{ 'x'.ljust(5000000) }}",
        "{{ '{:>5000000}'.format('x') }}",
        "{{ '%5000000s'|format('x') }}",
        "{% for a in 'x'*3000 %}{% for b in 'x'*3000 %}y{% endfor %}{% endfor %}",
    ],
)
def test_staff_text_cannot_make_more_than_the_cap(source: str) -> None:
    """The red-team's cases: each one made megabytes (ljust(3000000000) made 3 GB)."""
    with pytest.raises(staff_text.StaffTextProblem, match="refused by the sandbox"):
        render(source)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ 'x'.ljust(3000000000) }}", "ljust()'s result would be longer than 1,000,000"),
        ("{{ 'x'.zfill(5000000) }}", "zfill()'s result"),
        ("{{ 'x'.encode().rjust(5000000) }}", "rjust()'s result"),
        ("{{ 'x\t'.expandtabs(100000000) }}", "expandtabs()'s result"),
        ("{{ 'xx'.translate({120: 'y' * 999999}) }}", "translate()'s result"),
        ("{{ '{:{w}}'.format('x', w=5) }}", "format width taken from an argument"),
        ("{{ '{:.5000000f}'.format(1.5) }}", "the formatted text"),
        ("{{ '%5000000s' % 'x' }}", "the formatted text"),
        ("{{ '%*s' % (5000000, 'x') }}", "'*' width"),
        (BIG + "{{ a ~ a }}", "the joined text"),
        (BIG + "{{ a + a }}", "the joined value"),
        (BIG + "{{ a.join(a) }}", "the joined text"),
        (BIG + "{{ a.replace('x', 'yy') }}", "replace()'s result"),
        (BIG + "{{ a|replace('x', 'yy') }}", "replace()'s result"),
        (BIG + "{{ [a, a] }}", "a value written out"),
        (BIG + "{{ [a, a]|join }}", "the value given to |join"),
        (BIG + "{{ [a] * 2 }}", "a repetition that large"),
        ("{{ ('x\n' * 400000)|indent(100) }}", "|indent's result"),
        ("{{ ('x ' * 400000)|wordwrap(1, wrapstring='-----') }}", "|wordwrap's result"),
        ("{{ 'abc'|truncate(2, end='e' * 999999 ~ 'ee') }}", "the joined text"),
        ("{{ [1]|batch(1000000000, 'x')|list }}", "more than 10,000 rows"),
        ("{{ [1]|slice(100000000, 'x')|list }}", "more than 10,000 rows"),
        # Loops that write nothing still count their steps.
        ("{% for a in 'x'*999999 %}{% for b in 'x'*999999 %}{% endfor %}{% endfor %}", "loop"),
        # Output gathered in memory before anything counts it: refused as written.
        ("{% macro m() %}{{ 'x' }}{% endmacro %}{{ m() }}", "{% macro %} is not allowed"),
        ("{% set b %}{{ 'x' }}{% endset %}{{ b }}", "{% set %}…{% endset %} is not allowed"),
        ("{% filter upper %}x{% endfilter %}", "{% filter %} is not allowed"),
        # A recipient's own markup stays escaped.
        ("{% autoescape false %}{{ first_name }}{% endautoescape %}", "{% autoescape %}"),
        ("{{ first_name|safe }}", "|safe is not allowed"),
    ],
)
def test_every_way_to_make_a_giant_value_is_refused_saying_which(
    source: str, fragment: str
) -> None:
    with pytest.raises(staff_text.StaffTextProblem) as caught:
        render(source)
    assert fragment in str(caught.value)


def test_output_up_to_the_cap_renders_and_ordinary_text_is_unchanged() -> None:
    assert len(render("{{ 'x'|center(999999) }}")) == 999999
    assert len(render("{% for a in 'x'*1000 %}{{ 'y' * 999 }}{% endfor %}")) == 999000
    source = (
        "<p>Hi {{ greeting_name }}, {{ first_name|upper }} {{ 'a' ~ 'b' }}"
        " {{ '{:>4}'.format('x') }} {{ '%3s' % 'y' }}</p>"
        "{% for c in 'abc' %}{{ loop.index }}{{ c }}{% endfor %}{{ ['p', 'q']|join(',') }}"
    )
    assert render(source) == "<p>Hi Ann, ANN ab    x   y</p>1a2b3cp,q"
    assert render("{{ '<b>' ~ first_name }}") == "&lt;b&gt;Ann"


def test_file_templates_render_under_the_same_caps(tmp_path) -> None:  # noqa: ANN001
    settings: Settings = settings_for(tmp_path / "var")
    env = file_environment(settings.templates_dir)
    values = {**sample_context(settings), "staff_body": "STAFF-BODY", "staff_preheader": ""}
    assert "STAFF-BODY" in env.get_template("staff/_layout/body.html").render(values)
    with pytest.raises(SecurityError, match="loop steps"):
        env.from_string(
            "{% for a in 'x'*999 %}{% for b in 'x'*999 %}{% endfor %}{% endfor %}"
        ).render()
    assert MAX_OUTPUT == 1_000_000
