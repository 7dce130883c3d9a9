"""Data validation: schema inference, every violation reported, hard ones stop with a clear
message naming the column and the rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelloop.exceptions import InvalidInput
from modelloop.pipeline._schema import (
    ColumnRule,
    DataSchema,
    DataValidationError,
    check_frame,
    infer_schema,
    raise_for_hard,
)


def _train(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "distance": rng.uniform(17.0, 4983.0, n),
            "hour": rng.integers(5, 24, n).astype("int64"),
            "carrier": rng.choice(["AA", "DL", "UA"], n),
            "late": rng.random(n) < 0.3,
            "when": pd.date_range("2013-01-01", periods=n, freq="h"),
            "note": [None if i % 10 == 0 else f"n{i}" for i in range(n)],
        }
    )


def test_infer_schema_records_types_ranges_categories_and_null_rates() -> None:
    train = _train()
    schema = infer_schema(train, max_categories=50)
    rules = {r.name: r for r in schema.columns}
    assert [r.name for r in schema.columns] == list(train.columns)
    assert rules["distance"].dtype == "float"
    assert rules["distance"].min == pytest.approx(train["distance"].min())
    assert rules["hour"] == ColumnRule("hour", "int", 0.0, 5.0, 23.0, None)
    assert rules["carrier"].dtype == "string" and rules["carrier"].categories == ("AA", "DL", "UA")
    assert rules["late"].dtype == "bool" and rules["when"].dtype == "datetime"
    # 360 distinct texts: too many to be categories; one null in ten
    assert rules["note"].categories is None and rules["note"].nullable_rate == pytest.approx(0.1)


def test_schema_round_trips_and_digest_is_stable() -> None:
    schema = infer_schema(_train())
    again = DataSchema.from_dict(schema.to_dict())
    assert again == schema
    assert again.digest() == schema.digest() and len(schema.digest()) == 64
    other = infer_schema(_train().assign(hour=lambda f: f["hour"] + 1))
    assert other.digest() != schema.digest()
    with pytest.raises(InvalidInput, match=r"columns\[0\]\.dtype"):
        DataSchema.from_dict({"columns": [{"name": "a", "dtype": "decimal"}]})


def test_data_like_training_has_no_violation() -> None:
    schema = infer_schema(_train(800))
    report = check_frame(_train(400), schema)
    assert report.ok and report.violations == () and report.n_rows == 400
    assert report.to_dict()["ok"] is True


def test_every_violation_is_reported_with_column_rule_and_severity() -> None:
    train = _train()
    schema = infer_schema(train)
    new = train.copy()
    new.loc[:11, "distance"] = -5.0  # 12 values below the minimum: soft
    new.loc[0, "hour"] = 30  # above the maximum: soft
    new["carrier"] = new["carrier"].astype(object)
    new.loc[:39, "carrier"] = "ZZ"  # 10% unknown category: hard
    new["late"] = new["late"].astype("boolean")
    new.loc[:99, "late"] = pd.NA  # nulls in a column that had none: hard
    new = new.drop(columns=["when"])  # missing: hard
    report = check_frame(new, schema)
    got = {(v.column, v.rule): v for v in report.violations}
    assert set(got) == {
        ("distance", "min"),
        ("hour", "max"),
        ("carrier", "categories"),
        ("late", "nulls"),
        ("when", "missing_column"),
    }
    low = got[("distance", "min")]
    assert low.severity == "soft" and low.count == 12 and low.examples == (-5.0,)
    expected = f"column 'distance': 12 values below the minimum {train['distance'].min():.6g} seen"
    assert low.message.startswith(expected)
    assert "e.g. -5.0" in low.message
    assert got[("hour", "max")].examples == (30,) and got[("hour", "max")].severity == "soft"
    cat = got[("carrier", "categories")]
    assert cat.severity == "hard" and cat.count == 40 and cat.examples == ("ZZ",)
    assert got[("late", "nulls")].severity == "hard" and got[("late", "nulls")].count == 100
    assert "had none in training" in got[("late", "nulls")].message
    assert got[("when", "missing_column")].severity == "hard"
    assert not report.ok and len(report.hard) == 3 and len(report.soft) == 2


def test_wrong_type_is_hard_and_int_with_nulls_is_accepted() -> None:
    train = _train()
    schema = infer_schema(train)
    new = train.copy()
    new["distance"] = new["distance"].astype(str)
    new["hour"] = new["hour"].astype("float64")
    new.loc[0, "hour"] = np.nan  # pandas turns an int column with nulls into whole floats
    report = check_frame(new, schema, null_rate_tolerance=0.01)
    got = {(v.column, v.rule): v for v in report.violations}
    assert got[("distance", "dtype")].severity == "hard"
    assert "expected float values" in got[("distance", "dtype")].message
    assert ("hour", "dtype") not in got
    assert got[("hour", "nulls")].severity == "soft"  # 1 in 400 is within the tolerance


def test_small_share_of_unknown_categories_is_soft() -> None:
    train = _train()
    new = train.copy()
    new["carrier"] = new["carrier"].astype(object)
    new.loc[0, "carrier"] = "B6"
    report = check_frame(new, infer_schema(train))
    (v,) = report.violations
    assert (v.column, v.rule, v.severity, v.count) == ("carrier", "categories", "soft", 1)
    assert report.ok
    raise_for_hard(report)  # nothing hard: no error


def test_raise_for_hard_names_column_rule_and_count() -> None:
    train = _train()
    new = train.drop(columns=["distance"]).assign(hour=train["hour"].astype(str))
    report = check_frame(new, infer_schema(train))
    with pytest.raises(DataValidationError) as err:
        raise_for_hard(report)
    msg = str(err.value)
    assert "2 hard violation(s) in 400 rows" in msg
    assert "[missing_column] column 'distance'" in msg
    assert "[dtype] column 'hour': expected int values" in msg
    assert isinstance(err.value, InvalidInput) and err.value.report is report
