from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelloop.exceptions import InvalidInput, SchemaMismatch
from modelloop.monitoring import CategoricalProfile, NumericProfile, ReferenceProfile


def test_numeric_profile_counts_stats_and_edges() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, 50_000)
    x[:100] = np.nan
    x[100:110] = np.inf
    p = NumericProfile.from_values(x, "x", n_bins=500)
    finite = x[np.isfinite(x)]
    assert p.count == len(finite) and p.missing == 110
    assert p.min == finite.min() and p.max == finite.max()
    assert p.edges[0] == finite.min() and p.edges[-1] == finite.max()
    assert len(p.edges) == 501 and len(p.counts) == 2 * 501 - 1
    assert p.counts.sum() == p.count
    # equal-rank edges: no open cell holds more than 1/n_bins of the data
    assert p.counts[1::2].max() <= p.count / 500 + 1
    assert p.mean == pytest.approx(finite.mean()) and p.std == pytest.approx(finite.std(ddof=1))
    assert p.quantiles[0.5] == pytest.approx(np.median(finite))
    # the CDF at every edge is exact
    s = np.sort(finite)
    np.testing.assert_array_equal(p.cum_lt, np.searchsorted(s, p.edges, "left"))
    np.testing.assert_array_equal(p.cum_le, np.searchsorted(s, p.edges, "right"))


def test_discrete_numeric_column_uses_every_value_as_an_edge() -> None:
    x = np.random.default_rng(1).integers(0, 30, 10_000)
    p = NumericProfile.from_values(x, "k", n_bins=2048)
    assert list(p.edges) == sorted(set(x.tolist()))
    assert p.counts[1::2].sum() == 0  # all mass sits in point cells


def test_categorical_profile_from_every_container() -> None:
    values = ["a", "b", None, "a", "c", "a"]
    expected = {"a": 3, "b": 1, "c": 1}
    for v in (
        pd.Series(values, dtype="object"),
        pd.Series(values, dtype="string"),
        pd.Series(values, dtype="category"),
        pa.array(values),
        pa.array(values).dictionary_encode(),
        pa.chunked_array([values[:3], values[3:]]),
    ):
        p = CategoricalProfile.from_values(v, "c")
        assert dict(p.categories) == expected and p.missing == 1 and p.count == 5
    assert list(CategoricalProfile.from_values(values).categories) == ["a", "b", "c"]


def test_reference_profile_round_trips_through_json_and_is_compact(workload_frames) -> None:
    ref, _ = workload_frames
    prof = ReferenceProfile.from_frame(ref)
    assert prof.numeric == [f"num_{i}" for i in range(20)]
    assert prof.categorical == [f"cat_{j}" for j in range(5)]
    text = json.dumps(prof.to_dict(), allow_nan=False)
    assert len(text) < 500_000
    back = ReferenceProfile.from_dict(json.loads(text))
    assert back == prof
    np.testing.assert_array_equal(back["num_3"].edges, prof["num_3"].edges)
    assert back["cat_1"].categories == prof["cat_1"].categories


def test_profile_of_arrow_table_and_forced_categorical() -> None:
    t = pa.table({"n": [1, 2, 3, None], "code": [7, 7, 8, 9]})
    prof = ReferenceProfile.from_frame(t, categorical=["code"])
    assert prof["n"].kind == "numeric" and prof["n"].missing == 1
    assert dict(prof["code"].categories) == {"7": 2, "8": 1, "9": 1}


def test_profile_errors_name_the_problem() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(SchemaMismatch, match="'b'"):
        ReferenceProfile.from_frame(df, ["b"])
    with pytest.raises(InvalidInput, match="not in the reference profile"):
        ReferenceProfile.from_frame(df)["zzz"]
    with pytest.raises(InvalidInput, match="supported format"):
        ReferenceProfile.from_dict({"format": 99})
    with pytest.raises(InvalidInput, match="categorical names"):
        ReferenceProfile.from_frame(df, categorical=["x"])


def test_empty_numeric_column_profile() -> None:
    p = NumericProfile.from_values([np.nan, np.nan], "e")
    assert p.count == 0 and p.missing == 2 and p.min is None
    assert NumericProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p
