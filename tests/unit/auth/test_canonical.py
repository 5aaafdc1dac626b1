"""RFC 3986 encoding, form decoding and the canonical query (imm-wire.md §2 step 5)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from hypothesis import given
from hypothesis import strategies as st

from api.auth.canonical import canonical_query, form_decode, percent_encode, wire_bytes, wire_str


def test_unreserved_stay_literal_everything_else_upper_hex() -> None:
    assert percent_encode("AZaz09-_.~") == "AZaz09-_.~"
    assert percent_encode(" ") == "%20"
    assert percent_encode('+*/:[]"') == "%2B%2A%2F%3A%5B%5D%22"
    assert percent_encode("狗") == "%E7%8B%97"
    assert percent_encode("\x7f") == "%7F"


@given(st.text())
def test_percent_encode_matches_quote_with_tilde_safe(value: str) -> None:
    # The SDK's own encoder is urllib's quote(safe="~"); ours must agree on every valid string.
    assert percent_encode(value) == quote(value, safe="~", encoding="utf-8")


def test_form_decode_plus_is_space_and_blank_values_kept() -> None:
    assert form_decode("a=1+2&b=&c&d=%2B") == [("a", "1 2"), ("b", ""), ("c", ""), ("d", "+")]
    assert form_decode("") == []
    assert form_decode("x=1&&y=2") == [("x", "1"), ("y", "2")]
    assert form_decode("k=1&k=2") == [("k", "1"), ("k", "2")]


def test_invalid_utf8_round_trips_to_the_same_bytes() -> None:
    pairs = form_decode("v=%FF%E7%8B")
    assert wire_bytes(pairs[0][1]) == b"\xff\xe7\x8b"
    assert percent_encode(pairs[0][1]) == "%FF%E7%8B"
    assert wire_bytes(wire_str(b"\xc3(")) == b"\xc3("


def test_canonical_query_sorts_by_encoded_name_then_value() -> None:
    pairs = [("b", "2"), ("a", "z"), ("a", "y"), ("B", "1"), ("a b", "")]
    assert canonical_query(pairs) == "B=1&a=y&a=z&a%20b=&b=2"
    assert canonical_query([]) == ""


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=6))
def test_decode_then_canonical_is_independent_of_wire_encoding(params: dict[str, str]) -> None:
    # Whatever way the client encoded the query (form or RFC 3986), the canonical form is the same.
    form = urlencode(params)
    rfc = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    assert canonical_query(form_decode(form)) == canonical_query(form_decode(rfc))
    assert canonical_query(form_decode(form)) == canonical_query(params.items())
