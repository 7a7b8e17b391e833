"""Requests by entity id (runtime.features.entities) and the feature cache (runtime.features.ttl_cache): plain
tensors and dictionaries, no database (the real one is in tests/features)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from runtime.core.contract import Categories, Contract, Tensor
from runtime.core.errors import (
    ArtifactError,
    CategoryError,
    DatatypeError,
    EntityIdError,
    FeatureNameError,
    NonFiniteError,
    ShapeError,
    UnknownEntityError,
)
from runtime.core.options import FeatureStoreOptions
from runtime.features import entities
from runtime.features.store import FeatureStore
from runtime.features.ttl_cache import TTLCache

CONTRACT = Contract(("a", "b", "c"), ("predict",), max_rows=10)


def _ids(*values, datatype="BYTES", shape=None) -> Tensor:
    return Tensor("entity_id", shape or [len(values)], datatype, list(values))


def _parse(*inputs: Tensor) -> entities.EntityRequest:
    return entities.parse(inputs, CONTRACT, max_ids=3, max_id_bytes=8)


def test_ids_arrive_as_strings_or_utf8_bytes():
    assert _parse(_ids("x1", b"x2")).ids == ("x1", "x2")


@pytest.mark.parametrize(
    "tensor, message",
    [
        (_ids(1.0, datatype="FP64"), "datatype FP64; entity ids are sent as BYTES"),
        (_ids("x", shape=[1, 1]), "shape [1, 1]; entity ids are one 1-D tensor"),
        (_ids("a", "b", shape=[3]), "shape [3] but 2 values"),
        (_ids(), "no ids (empty batch)"),
        (_ids("a", "b", "c", "d"), "4 ids exceed this model's limit of 3"),
        (_ids("ok", ""), "row 1: empty id"),
        (_ids("123456789"), "row 0: id longer than 8 bytes"),
        (_ids(b"\xff"), "row 0: the id is not UTF-8"),
        (_ids("a\nb"), "row 0: the id has control characters"),
        (_ids(7), "row 0: expected a string id, got int"),
    ],
)
def test_malformed_ids_are_refused_naming_the_row(tensor, message):
    with pytest.raises(EntityIdError, match=re.escape(message)):
        _parse(tensor)


def test_features_beside_the_ids_must_be_named_columns_of_the_same_length():
    with pytest.raises(FeatureNameError, match="input 'z': beside 'entity_id'"):
        _parse(_ids("x"), Tensor("z", [1], "FP64", [1.0]))
    with pytest.raises(ShapeError, match=r"input 'b': shape \[2\], but 'entity_id' has 1 rows"):
        _parse(_ids("x"), Tensor("b", [2], "FP64", [1.0, 2.0]))
    with pytest.raises(FeatureNameError, match="given more than once"):
        _parse(_ids("x"), Tensor("b", [1], "FP64", [1.0]), Tensor("b", [1], "FP64", [2.0]))


def test_given_features_replace_the_looked_up_ones_and_sources_are_per_row():
    request = _parse(_ids("x", "y"), Tensor("b", [2], "FP64", [10.0, 20.0]))
    rows = {"x": (1.0, 2.0, 3.0), "y": (4.0, None, 6.0)}  # a NULL where the caller gave the value
    out = entities.assemble(request, rows, frozenset({"y"}), CONTRACT, None)
    np.testing.assert_array_equal(out.inputs[0].data, [[1.0, 10.0, 3.0], [4.0, 20.0, 6.0]])
    assert json.loads(out.sources_parameter()) == {"rows": ["store", "cache"], "from_request": ["b"]}


def test_an_unknown_id_or_a_missing_value_is_a_400_unless_there_are_defaults():
    request = _parse(_ids("x", "ghost"))
    rows = {"x": (1.0, None, 3.0)}
    with pytest.raises(UnknownEntityError, match="row 0: entity 'x' has no value for feature 'b'"):
        entities.assemble(request, rows, frozenset(), CONTRACT, None)
    with pytest.raises(UnknownEntityError, match="row 1: unknown entity id 'ghost'"):
        entities.assemble(request, {"x": (1.0, 2.0, 3.0)}, frozenset(), CONTRACT, None)
    out = entities.assemble(request, rows, frozenset(), CONTRACT, {"a": 0.0, "b": -1.0, "c": 0.5})
    np.testing.assert_array_equal(out.inputs[0].data, [[1.0, -1.0, 3.0], [0.0, -1.0, 0.5]])
    assert out.sources == ("defaults", "defaults")


def test_a_null_is_a_gap_only_in_a_column_the_schema_lets_be_missing():
    gappy = Contract(("a", "b", "c"), ("predict",), max_rows=10, may_be_missing=(False, True, False))
    rows = {"x": (1.0, None, 3.0), "y": (None, 2.0, 3.0)}
    request = entities.parse([_ids("x")], gappy, max_ids=3, max_id_bytes=8)
    out = entities.assemble(request, rows, frozenset(), gappy, {"a": 0.0, "b": -1.0, "c": 0.5})
    np.testing.assert_array_equal(gappy.parse(None, out.inputs).features, [[1.0, np.nan, 3.0]])
    assert out.sources == ("store",)
    request = entities.parse([_ids("y")], gappy, max_ids=3, max_id_bytes=8)
    with pytest.raises(UnknownEntityError, match="row 0: entity 'y' has no value for feature 'a'"):
        entities.assemble(request, rows, frozenset(), gappy, None)
    given_gap = entities.parse([_ids("x"), Tensor("b", [1], "FP64", [None])], gappy, max_ids=3, max_id_bytes=8)
    assert np.isnan(entities.assemble(given_gap, rows, frozenset(), gappy, None).inputs[0].data[0, 1])
    given_a = entities.parse([_ids("x"), Tensor("a", [1], "FP64", [None])], gappy, max_ids=3, max_id_bytes=8)
    with pytest.raises(NonFiniteError, match="input 'a': row 0: null is not a number, and column 'a' may not be"):
        entities.assemble(given_a, rows, frozenset(), gappy, None)


def test_a_store_that_is_down_gives_the_defaults_to_every_row():
    out = entities.assemble(_parse(_ids("x")), None, frozenset(), CONTRACT, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert out.sources == ("defaults",)
    with pytest.raises(UnknownEntityError):
        entities.assemble(_parse(_ids("x")), None, frozenset(), CONTRACT, None)


def test_the_cache_expires_entries_and_evicts_the_oldest():
    now = [0.0]
    cache: TTLCache[str, int] = TTLCache(ttl_s=10, max_entries=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("b") == 2 and len(cache) == 2
    now[0] = 10.0
    assert cache.get("b") is None and cache.get("c") is None
    off: TTLCache[str, int] = TTLCache(ttl_s=0, max_entries=2)
    off.put("a", 1)
    assert off.get("a") is None and not off.enabled


# A model with string columns: 'n' numeric and may be missing, 's' a string of two categories.
MIXED = Contract(
    ("n", "s"),
    ("predict",),
    max_rows=10,
    may_be_missing=(True, False),
    string_columns=(False, True),
    categories=(None, Categories(frozenset({"a", "b"}), "'a', 'b'")),
)


def _mixed(*given: Tensor) -> entities.EntityRequest:
    return entities.parse([_ids("x", "y"), *given], MIXED, max_ids=3, max_id_bytes=8)


def test_a_model_with_string_columns_gets_one_tensor_per_column_text_as_str_null_as_a_gap():
    out = entities.assemble(_mixed(), {"x": (1.5, "a"), "y": (None, "b")}, frozenset(), MIXED, None)
    assert [(i.name, i.datatype, list(i.shape)) for i in out.inputs] == [("n", "FP64", [2]), ("s", "BYTES", [2])]
    features = MIXED.parse(None, out.inputs).features
    assert features[0].tolist() == [1.5, "a"] and np.isnan(features[1, 0]) and features[1, 1] == "b"


def test_a_string_column_sent_beside_the_ids_replaces_the_looked_up_one_as_sent():
    given = Tensor("s", [2], "BYTES", [b"b", "a"])
    out = entities.assemble(_mixed(given), {"x": (1.0, 7.0), "y": (2.0, None)}, frozenset(), MIXED, None)
    assert out.inputs[1] is given
    assert MIXED.parse(None, out.inputs).features[:, 1].tolist() == ["b", "a"]


@pytest.mark.parametrize(
    "row, message",
    [
        (("1.5", "a"), "row 1: entity 'y' has the text '1.5' for feature 'n', a numeric column"),
        ((1.0, 3.0), "row 1: entity 'y' has the number 3.0 for feature 's', a string column"),
    ],
)
def test_a_stored_value_of_the_wrong_kind_is_a_400_naming_entity_and_feature(row, message):
    with pytest.raises(DatatypeError, match=re.escape(message)):
        entities.assemble(_mixed(), {"x": (1.0, "a"), "y": row}, frozenset(), MIXED, None)


def test_a_null_or_an_unseen_category_in_a_string_column_is_refused_and_defaults_may_be_text():
    with pytest.raises(UnknownEntityError, match="entity 'y' has no value for feature 's'"):
        entities.assemble(_mixed(), {"x": (1.0, "a"), "y": (1.0, None)}, frozenset(), MIXED, None)
    out = entities.assemble(_mixed(), {"x": (1.0, "a"), "y": (1.0, None)}, frozenset(), MIXED, {"n": 0.0, "s": "b"})
    assert out.sources == ("store", "defaults") and out.inputs[1].data == ["a", "b"]
    unseen = entities.assemble(_mixed(), {"x": (1.0, "a"), "y": (1.0, "zz")}, frozenset(), MIXED, None)
    with pytest.raises(CategoryError, match="input 's': row 1: 'zz' is not a category"):
        MIXED.parse(None, unseen.inputs)


def test_defaults_without_a_value_for_every_feature_are_refused_at_load():
    options = FeatureStoreOptions(dsn_env="NEVER_READ", table="features", defaults={"n": 0.0})
    with pytest.raises(ArtifactError, match=r"feature_store.defaults: no value for feature\(s\) s"):
        FeatureStore("m", options, ("n", "s"))
