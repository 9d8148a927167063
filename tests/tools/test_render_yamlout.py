"""The dependency-free YAML writer reads back (with PyYAML) as exactly what was written."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nodelocaldns.tools import yamlout

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.text(max_size=40),
    # Strings that look like other YAML types, and Corefile-like multi-line text.
    st.sampled_from(
        ["yes", "No", "on", "~", "null", "1e3", "0x1F", "0o17", "1_000", ".5", "10%", "53", "-1", ""]
    ),
    st.lists(st.text(alphabet=" abc{}:#-\t", max_size=12), min_size=1, max_size=6).map("\n".join),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=12), inner, max_size=4),
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), trees, max_size=5))
def test_round_trip(value: dict[str, Any]) -> None:
    assert yaml.safe_load(yamlout.dump(value)) == value


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=8), trees, min_size=1, max_size=3), max_size=4))
def test_streams_round_trip(documents: list[dict[str, Any]]) -> None:
    text = yamlout.dump_all(documents, comment="first line\nsecond: line")
    assert text.startswith("# first line\n# second: line\n")
    assert list(yaml.safe_load_all(text)) == documents


def test_corefile_is_a_literal_block() -> None:
    corefile = ".:53 {\n    errors\n    cache 30\n}\n"
    text = yamlout.dump({"data": {"Corefile": corefile}})
    assert text == "data:\n  Corefile: |\n    .:53 {\n        errors\n        cache 30\n    }\n"


def test_lists_sit_at_the_key_indentation_like_kubectl() -> None:
    assert yamlout.dump({"args": ["-localip", "169.254.20.10"]}) == 'args:\n- "-localip"\n- "169.254.20.10"\n'


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        yamlout.dump({"x": 0.5})
