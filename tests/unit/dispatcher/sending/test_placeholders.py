"""Filling a part cut at its placeholders: escaped exactly as the translate tables say."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from dispatcher.sending.placeholders import (
    ESCAPE_ATTR,
    ESCAPE_TEXT,
    Segments,
    escape_attr,
    escape_text,
)

_VALUES = st.text(alphabet=st.sampled_from("&<>\"'a;#é\n ") | st.characters(), max_size=40)


@given(_VALUES)
@example('&amp;<b>&lt;"x"</b>')
@example("")
def test_escapes_are_the_translate_tables(value: str) -> None:
    assert escape_text(value) == value.translate(ESCAPE_TEXT)
    assert escape_attr(value) == value.translate(ESCAPE_ATTR)


@given(_VALUES, _VALUES)
def test_fill_puts_each_value_in_its_place_escaped_for_it(first: str, url: str) -> None:
    segments = Segments(
        (
            "<p>",
            ("first_name", "text"),
            '</p><a href="',
            ("unsubscribe_url", "attr"),
            '">',
            ("first_name", "raw"),
            "</a>",
        )
    )
    filled = segments.fill({"first_name": first, "unsubscribe_url": url})
    assert filled == (
        f'<p>{first.translate(ESCAPE_TEXT)}</p><a href="{url.translate(ESCAPE_ATTR)}">{first}</a>'
    )
