"""A campaign's lines encoded once give the body encoded whole, byte for byte."""

from __future__ import annotations

import quopri

from hypothesis import example, given
from hypothesis import strategies as st

from dispatcher.sending.placeholders import Segments
from dispatcher.sending.quoted_printable import EncodedPart, encode

FIELDS = ("first_name", "unsubscribe_url")

# Text that meets every rule of quoted-printable at once: line ends of all three kinds,
# trailing white space, lone dots, "=", non-ASCII, and lines around the 76-octet limit.
_PIECES = st.sampled_from(
    ["a", " ", "\t", ".", "=", "é", "→", "\n", "\r\n", "\r", "x" * 70, "y" * 74, "<p>", "&"]
)
_TEXT = st.lists(_PIECES, max_size=30).map("".join)
_PLACE = st.tuples(st.sampled_from(FIELDS), st.sampled_from(["raw", "text", "attr"]))
_SEGMENTS = st.lists(st.one_of(_TEXT, _PLACE), max_size=12).map(
    lambda parts: Segments(tuple(p for p in parts if p != ""))
)
_VALUE = st.lists(
    st.sampled_from(["a", " ", ".", "=", "é", "\n", "\r", "z" * 75, "&", '"']), max_size=8
)


@given(_SEGMENTS, _VALUE.map("".join), _VALUE.map("".join))
@example(Segments(("x" * 76 + "\n", ("first_name", "text"))), "Ann", "u")
@example(Segments(("a \n.\n", ("first_name", "raw"), " \n.")), "", "u")
@example(Segments((("first_name", "raw"),)), "z" * 75 + "é", "u")
@example(Segments(("\r", ("first_name", "raw"), "\r\n")), "", "")
@example(Segments((("first_name", "raw"), "\r\n")), "\r", "")
def test_runs_encoded_once_equal_the_part_encoded_whole(
    segments: Segments, name: str, url: str
) -> None:
    values = {"first_name": name, "unsubscribe_url": url}
    assert EncodedPart.of(segments).fill(values) == encode(segments.fill(values))


def test_only_the_lines_with_a_value_are_left_to_encode() -> None:
    segments = Segments(
        ("<p>one</p>\n<p>two</p>\n<p>Hi ", ("first_name", "text"), "!</p>\n<p>end</p>")
    )
    runs = EncodedPart.of(segments).runs
    assert [type(run) for run in runs] == [bytes, Segments, bytes]
    assert runs[0] == b"<p>one</p>\r\n<p>two</p>\r\n"


def test_encoded_lines_are_short_and_decode_to_the_text() -> None:
    text = "é" * 100 + "\n" + "a " * 60 + " \n.\nend"
    encoded = encode(text)
    assert max(map(len, encoded.split(b"\r\n"))) <= 76
    assert quopri.decodestring(encoded).decode() == text.replace("\n", "\r\n")
