"""ingest/_rows_native.c against the Python path it replaces (ingest.rows.flatten_maps_py)."""

from __future__ import annotations

import math
from enum import IntEnum

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import rows

native = rows._flatten_native
needs_native = pytest.mark.skipif(native is None, reason="ingest._rows_native is not built")


class Level(IntEnum):
    HIGH = 3


class Label(str):
    pass


def both(maps: list[dict]) -> tuple:
    assert native is not None
    return native(maps, rows.attr_text), rows.flatten_maps_py(maps)


@needs_native
def test_every_value_type_becomes_the_same_text() -> None:
    shared = {"service.name": "checkout", "tokentrail.team": "search"}
    maps = [
        {
            "s": "plain",
            "unicode": "żółw ✓",
            "t": True,
            "f": False,
            "i": 42,
            "neg": -7,
            "big": 2**70,
            "x": 0.1,
            "nz": -0.0,
            "inf": math.inf,
            "nan": math.nan,
            "b": b"\x00\xff",
            "list": ["a", 1, True, None],
            "kv": {"k": [1.5, "v"]},
            "none": None,
            "enum": Level.HIGH,
            "sub": Label("sub"),
        },
        shared,
        shared,
        {},
        shared,
    ]
    got, want = both(maps)
    assert got == want
    assert got[0] == [0, 17, 19, 21, 21, 23]
    assert got[2][:7] == ["plain", "żółw ✓", "true", "false", "42", "-7", str(2**70)]


@needs_native
def test_empty_batch() -> None:
    assert both([]) == (([0], [], []), ([0], [], []))


@needs_native
def test_bad_input_is_a_type_error_not_a_crash() -> None:
    with pytest.raises(TypeError, match="not dict"):
        native([{"a": "b"}, ["not", "a", "dict"]], rows.attr_text)
    with pytest.raises(TypeError, match="not str"):
        native([{"a": b"x"}], lambda value: 5)
    with pytest.raises(ZeroDivisionError):
        native([{"a": b"x"}], lambda value: 1 / 0)


scalars = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # OTLP int_value is int64
    st.floats(allow_nan=False),
    st.binary(max_size=4),
    st.none(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@needs_native
@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=6), values, max_size=5), max_size=6))
def test_agrees_with_python_on_any_maps(maps: list[dict]) -> None:
    got, want = both(maps)
    assert got == want


def test_map_array_round_trips() -> None:
    """Whichever path is built, the MapArray holds the dicts' items as text."""
    maps = [{"a": "x", "n": 3}, {}, {"flag": False}]
    array = rows._map_array(maps)
    assert array.type == pa.map_(pa.string(), pa.string())
    assert array.to_pylist() == [[("a", "x"), ("n", "3")], [], [("flag", "false")]]
