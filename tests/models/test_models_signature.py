"""Signature inference, JSON round trip and enforcement of every kind of wrong input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from modelloop.exceptions import InvalidInput, SchemaMismatch
from modelloop.models import ColumnSpec, Signature, infer_signature


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "n_int": np.array([1, 2, 3], dtype=np.int64),
            "small": np.array([1, 2, 3], dtype=np.int8),
            "f_nan": [1.5, np.nan, 2.0],
            "f": np.array([0.5, 1.0, 2.0], dtype=np.float32),
            "nullable": pd.array([1, pd.NA, 3], dtype="Int64"),
            "flag": [True, False, True],
            "maybe": pd.array([True, None, False], dtype="boolean"),
            "color": pd.Categorical(["red", "blue", "red"]),
            "name": ["ann", "bob", None],
            "code": ["x", "y", "z"],
            "when": pd.to_datetime(["2020-01-01", "2020-06-01", None]),
            "when_utc": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"], utc=True),
        }
    )


@pytest.fixture
def sig(frame: pd.DataFrame) -> Signature:
    return infer_signature(frame)


@pytest.fixture
def record() -> dict:
    """One valid input row, as a JSON client would send it."""
    return {
        "n_int": 4,
        "small": 5,
        "f_nan": None,
        "f": 0.25,
        "nullable": None,
        "flag": False,
        "maybe": None,
        "color": "blue",
        "name": None,
        "code": "q",
        "when": "2021-03-04T05:06:07",
        "when_utc": "2021-03-04T05:06:07+02:00",
    }


# -- inference ---------------------------------------------------------------------------------


def test_infer_columns_dtypes_and_nullability(sig: Signature, frame: pd.DataFrame) -> None:
    by = {c.name: c for c in sig.inputs}
    assert sig.columns == list(frame.columns)
    assert by["n_int"] == ColumnSpec("n_int", "int64", nullable=False)
    assert by["small"].dtype == "int8"
    assert by["f_nan"] == ColumnSpec("f_nan", "float64", nullable=True, allow_nan=True)
    assert by["f"] == ColumnSpec("f", "float32", nullable=False, allow_nan=False)
    assert by["nullable"] == ColumnSpec("nullable", "Int64", nullable=True)
    assert by["flag"] == ColumnSpec("flag", "bool", nullable=False)
    assert by["maybe"] == ColumnSpec("maybe", "boolean", nullable=True)
    assert by["color"] == ColumnSpec("color", "category", False, categories=("blue", "red"))
    assert by["name"] == ColumnSpec("name", "string", nullable=True)
    assert by["code"] == ColumnSpec("code", "string", nullable=False)
    assert by["when"].dtype.startswith("datetime64[") and by["when"].nullable
    assert by["when_utc"].dtype.endswith(", UTC]") and not by["when_utc"].nullable
    assert sig.outputs == () and sig.classes is None and sig.task is None


def test_nullable_int_dtype_is_nullable_without_missing_values() -> None:
    sig = infer_signature(pd.DataFrame({"a": pd.array([1, 2], dtype="UInt16")}))
    assert sig.inputs[0] == ColumnSpec("a", "UInt16", nullable=True)


def test_infer_outputs_classes_and_task(cancer, diabetes) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    X, y = cancer
    y_named = pd.Series(np.where(y == 1, "benign", "malignant"), name="diagnosis")
    clf = LogisticRegression(max_iter=50).fit(X.iloc[:, :3], y_named)
    sig = infer_signature(X.iloc[:, :3], y_named, model=clf)
    assert sig.task == "classification"
    assert sig.classes == ("benign", "malignant")
    assert sig.outputs == (ColumnSpec("diagnosis", "string", nullable=False),)

    Xd, yd = diabetes
    reg = LinearRegression().fit(Xd, yd)
    sig = infer_signature(Xd, reg.predict(Xd), model=reg)
    assert sig.task == "regression" and sig.classes is None
    assert sig.outputs == (ColumnSpec("prediction", "float64", nullable=False),)


def test_infer_rejects_mixed_object_column_naming_it() -> None:
    with pytest.raises(InvalidInput, match="'mix'"):
        infer_signature(pd.DataFrame({"mix": pd.Series(["a", 1, 2.5], dtype=object)}))


def test_infer_needs_a_dataframe() -> None:
    with pytest.raises(InvalidInput, match="DataFrame"):
        infer_signature(np.zeros((2, 2)))  # type: ignore[arg-type]


# -- JSON --------------------------------------------------------------------------------------


def test_json_round_trip_is_exact(cancer) -> None:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame(
        {
            "c": pd.Categorical([1, 2, 1]),
            "b": pd.array([True, None, False], dtype="boolean"),
            "t": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"], utc=True),
        }
    )
    sig = infer_signature(frame, pd.Series([0, 1, 0], name="label"))
    again = Signature.from_json(sig.to_json())
    assert again == sig
    assert again.inputs[0].categories == (1, 2)  # integer categories stay integers

    X, y = cancer
    model = LogisticRegression(max_iter=50).fit(X.iloc[:, :2], y)
    sig = infer_signature(X.iloc[:, :2], y, model=model)
    doc = json.loads(sig.to_json())
    assert doc["classes"] == [0, 1] and doc["task"] == "classification"
    assert doc["format_version"] == 1
    assert Signature.from_dict(doc) == sig


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"inputs": [{"name": "a", "dtype": "complex128", "nullable": False}]}, "complex128"),
        ({"inputs": [{"name": "a", "dtype": "category", "nullable": False}]}, "categories"),
        ({"inputs": [{"name": "a", "nullable": False}]}, "dtype"),
        ({"inputs": [{"name": "a", "dtype": "int64", "nullable": "no"}]}, "nullable"),
        ({"format_version": 99, "inputs": []}, "upgrade"),
        ({"inputs": [], "task": "ranking"}, "task"),
    ],
)
def test_from_dict_rejects_malformed_documents(doc: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        Signature.from_dict(doc)


def test_from_json_rejects_invalid_json() -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        Signature.from_json("{not json")


# -- enforcement: accepted input ---------------------------------------------------------------


def test_validate_reorders_shuffled_columns_and_keeps_dtypes(sig, frame) -> None:
    shuffled = frame[list(reversed(frame.columns))]
    out = sig.validate(shuffled)
    assert list(out.columns) == sig.columns
    assert out.dtypes.to_dict() == frame.dtypes.to_dict()
    pd.testing.assert_frame_equal(out, frame)


def test_validate_accepts_records_in_any_key_order(sig, frame, record) -> None:
    shuffled = dict(reversed(list(record.items())))
    out = sig.validate([record, shuffled])
    assert list(out.columns) == sig.columns
    assert out.dtypes.to_dict() == frame.dtypes.to_dict()
    assert out["n_int"].tolist() == [4, 4]
    assert out["nullable"].isna().all() and out["maybe"].isna().all()
    assert out["when_utc"].iloc[0] == pd.Timestamp("2021-03-04T03:06:07Z")
    assert out["color"].cat.categories.tolist() == ["blue", "red"]


def test_validate_accepts_mapping_of_columns_and_single_row_mapping(sig, frame, record) -> None:
    columns = {name: [value, value] for name, value in record.items()}
    assert sig.validate(columns).shape == (2, len(record))
    one = sig.validate(record)
    assert one.shape == (1, len(record))
    assert one.dtypes.to_dict() == frame.dtypes.to_dict()


def test_validate_accepts_integral_floats_in_int_column(sig, record) -> None:
    out = sig.validate([{**record, "n_int": 7.0, "nullable": 8.0}])
    assert out["n_int"].dtype == np.int64 and out["n_int"].iloc[0] == 7
    assert out["nullable"].dtype == pd.Int64Dtype() and out["nullable"].iloc[0] == 8


def test_validate_empty_records_gives_typed_empty_frame(sig, frame) -> None:
    out = sig.validate([])
    assert len(out) == 0 and out.dtypes.to_dict() == frame.dtypes.to_dict()


# -- enforcement: rejected input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("n_int", "7", ["'7'", "row 1", "number"]),  # a string in a numeric column
        ("f", "abc", ["'abc'", "row 1"]),
        ("n_int", 1.5, ["1.5", "fraction"]),
        ("nullable", 2.25, ["2.25", "fraction"]),
        ("n_int", True, ["True"]),
        ("n_int", None, ["missing"]),  # NaN/None where training had none
        ("f", float("nan"), ["missing"]),
        ("code", None, ["missing"]),
        ("color", None, ["missing"]),
        ("f_nan", float("inf"), ["infinite"]),  # inf never allowed, even where NaN is
        ("f", float("-inf"), ["infinite"]),
        ("small", 300, ["300", "out of range"]),
        ("f", 1e300, ["out of range"]),
        ("color", "green", ["'green'", "unknown category", "'blue'", "'red'"]),
        ("code", 12, ["12", "string"]),
        ("flag", 1, ["boolean"]),
        ("when", "not a date", ["'not a date'"]),
        ("when", "2020-01-01T00:00+02:00", ["timezone"]),
        ("when_utc", "2020-01-01T00:00", ["timezone"]),
    ],
)
def test_wrong_values_name_the_column(sig, record, column, value, words) -> None:
    with pytest.raises(SchemaMismatch) as info:
        sig.validate([record, {**record, column: value}])
    assert info.value.column == column
    message = str(info.value)
    assert f"'{column}'" in message
    for word in words:
        assert word in message


def test_wrong_value_in_dataframe_names_row(sig, frame) -> None:
    bad = frame.copy()
    bad["n_int"] = pd.Series([1, "x", 3], dtype=object)
    with pytest.raises(SchemaMismatch, match=r"'n_int'.*row 1.*'x'") as info:
        sig.validate(bad)
    assert info.value.column == "n_int"


def test_missing_columns_are_all_named(sig, frame) -> None:
    with pytest.raises(SchemaMismatch) as info:
        sig.validate(frame.drop(columns=["color", "when"]))
    assert info.value.column == "color"
    assert "missing columns ['color', 'when']" in str(info.value)


def test_extra_columns_are_all_named(sig, frame) -> None:
    with pytest.raises(SchemaMismatch) as info:
        sig.validate(frame.assign(zz=1, aa=2))
    assert info.value.column == "zz"
    assert "unexpected columns ['zz', 'aa']" in str(info.value)


def test_record_missing_a_key_names_record_and_column(sig, record) -> None:
    partial = {k: v for k, v in record.items() if k != "flag"}
    with pytest.raises(SchemaMismatch, match=r"record 1 .*missing columns \['flag'\]") as info:
        sig.validate([record, partial])
    assert info.value.column == "flag"


def test_unreadable_input_shapes_are_invalid_input(sig, record) -> None:
    with pytest.raises(InvalidInput, match="DataFrame"):
        sig.validate(np.zeros((2, 12)))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="record 1"):
        sig.validate([record, ["not", "a", "mapping"]])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="lengths"):
        sig.validate({name: [v] * (2 if name == "f" else 1) for name, v in record.items()})


def test_column_spec_rejects_bad_definitions() -> None:
    with pytest.raises(InvalidInput):
        ColumnSpec("a", "float16", nullable=False)
    with pytest.raises(InvalidInput):
        ColumnSpec("a", "int64", nullable=False, categories=("x",))
    with pytest.raises(InvalidInput):
        Signature(inputs=(ColumnSpec("a", "int64", False), ColumnSpec("a", "int64", False)))


# -- categories of string columns --------------------------------------------------------------


def _plans(n: int = 200) -> pd.DataFrame:
    """A few-valued string column, a many-valued one and a number, ``n`` rows."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "plan": rng.choice(["free", "pro", "team"], n),
            "user": [f"u{i}" for i in range(n)],
            "age": rng.integers(18, 90, n),
        }
    )


def test_inferred_string_categories_follow_the_stated_rule() -> None:
    by = {c.name: c for c in infer_signature(_plans()).inputs}
    assert by["plan"].categories == ("free", "pro", "team") and by["plan"].unseen == "accept"
    assert by["user"].categories is None and by["user"].unseen is None  # each value seen once
    assert by["age"].categories is None
    # an input example is too small to tell: no categories from five rows
    assert infer_signature(_plans().head(5)).inputs[0].categories is None
    assert infer_signature(_plans(99)).inputs[0].categories is None
    assert infer_signature(_plans(100)).inputs[0].categories == ("free", "pro", "team")


def test_categorical_names_columns_or_gives_their_categories() -> None:
    frame = _plans()
    sig = infer_signature(frame, categorical=["user"], unseen="refuse")
    by = {c.name: c for c in sig.inputs}
    assert by["user"].categories == tuple(sorted(frame["user"])) and by["user"].refuses_unseen
    assert by["plan"].categories is None  # a list names every categorical column
    sig = infer_signature(frame, categorical={"plan": ["team", "pro", "free", "edu"]})
    assert sig.inputs[0].categories == ("team", "pro", "free", "edu")
    assert infer_signature(frame, categorical=[]).inputs[0].categories is None


@pytest.mark.parametrize(
    ("categorical", "unseen", "match"),
    [
        ({"plan": ["free", "pro"]}, "accept", r"'plan'.*\['team'\]"),
        (["age"], "accept", "'age' is int64"),
        (["nope"], "accept", "nope"),
        ("plan", "accept", "list of column names"),
        ({"plan": ["free", "pro", "team", 3]}, "accept", "strings"),
        (None, "maybe", "unseen"),
    ],
)
def test_categorical_mistakes_are_named(categorical: object, unseen: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        infer_signature(_plans(), categorical=categorical, unseen=unseen)  # type: ignore[arg-type]


def test_validate_refuses_or_accepts_unseen_strings_by_policy() -> None:
    frame = _plans()
    refuse = infer_signature(frame, categorical=["plan"], unseen="refuse")
    rows = frame.head(3).assign(plan=["pro", "gold", None])
    with pytest.raises(SchemaMismatch, match=r"'plan'.*row 1.*'gold'") as info:
        refuse.validate(rows.head(2))
    assert info.value.column == "plan"
    accept = infer_signature(frame, categorical=["plan"], unseen="accept")
    out = accept.validate(rows.head(2))
    assert out["plan"].tolist() == ["pro", "gold"] and out["plan"].dtype == frame["plan"].dtype
    # known values pass either way, with the dtype of a plain string column
    ok = refuse.validate(frame.head(3))
    assert ok["plan"].tolist() == frame["plan"].head(3).tolist()


def test_string_categories_round_trip_through_json() -> None:
    sig = infer_signature(_plans(), categorical={"plan": ["free", "pro", "team"]}, unseen="refuse")
    doc = json.loads(sig.to_json())
    assert doc["format_version"] == 2  # older readers are told to upgrade, not misled
    plan = doc["inputs"][0]
    assert plan["categories"] == ["free", "pro", "team"] and plan["unseen"] == "refuse"
    assert doc["inputs"][1]["unseen"] is None
    again = Signature.from_json(sig.to_json())
    assert again == sig and again.inputs[0].refuses_unseen
    accept = infer_signature(_plans())
    assert Signature.from_json(accept.to_json()).inputs[0].unseen == "accept"


def test_signature_written_before_unseen_existed_still_loads() -> None:
    old = {  # as modelloop wrote it before string categories: no "unseen" anywhere
        "format_version": 1,
        "inputs": [
            {"name": "color", "dtype": "category", "nullable": False,
             "categories": ["blue", "red"], "allow_nan": False},
            {"name": "code", "dtype": "string", "nullable": False, "categories": None,
             "allow_nan": False},
        ],
        "outputs": [],
        "classes": None,
        "task": None,
    }  # fmt: skip
    sig = Signature.from_dict(old)
    color, code = sig.inputs
    assert color.unseen == "refuse" and code.categories is None and code.unseen is None
    assert sig.validate({"color": "red", "code": "anything"})["code"].tolist() == ["anything"]
    with pytest.raises(SchemaMismatch, match="'green'"):
        sig.validate({"color": "green", "code": "x"})
    assert sig.to_dict()["format_version"] == 1  # no string categories: still readable by old


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "a", "dtype": "int64", "nullable": False, "categories": [1, 2]}, "only"),
        ({"name": "a", "dtype": "string", "nullable": False, "categories": ["x", 2]}, "strings"),
        ({"name": "a", "dtype": "string", "nullable": False, "unseen": "accept"}, "unseen"),
        (
            {"name": "a", "dtype": "string", "nullable": False, "categories": ["x"],
             "unseen": "ignore"},
            "'refuse' or 'accept'",
        ),
        (
            {"name": "a", "dtype": "category", "nullable": False, "categories": ["x"],
             "unseen": "accept"},
            "string column",
        ),
    ],
)  # fmt: skip
def test_malformed_category_specs_are_refused(spec: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        Signature.from_dict({"inputs": [spec]})
