"""Data validation: a schema inferred from training data, and new data checked against it.

:func:`infer_schema` records per column its kind of dtype, the share of nulls, the range of
numbers and, for text columns with few distinct values, the allowed categories.
:func:`check_frame` reports every violation at once (pandera with ``lazy=True`` checks column
presence, dtype, range and categories; null rates are counted directly because pandera's
``nullable`` is all-or-nothing and cannot express a tolerated rate).

Hard violations (the pipeline stops, see :func:`raise_for_hard`):

- ``missing_column``: a schema column is absent;
- ``dtype``: a column's values are not of the schema's kind (an ``int`` column holding floats
  that are all whole numbers, as pandas makes of an int column with nulls, is accepted);
- ``nulls``: the null rate exceeds the training rate by more than ``null_rate_tolerance``
  (in particular nulls in a column that had none);
- ``categories``: values never seen in training make up more than
  ``unknown_category_tolerance`` of the column's non-null values.

Soft violations (reported; what they do to registration is the pipeline's
``validation.on_soft``: ``warn``, ``hold`` or ``fail``, applied by :func:`enforce`):

- ``min`` / ``max``: numbers outside the training range widened by ``range_tolerance`` times
  its width;
- ``nulls``: a null rate above the training rate by at most the tolerance;
- ``categories``: unseen values within the tolerated share.

Columns present in the data but not in the schema are ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modelloop.exceptions import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ColumnRule",
    "DataSchema",
    "DataValidationError",
    "ValidationReport",
    "Violation",
    "check_frame",
    "enforce",
    "infer_schema",
    "missing_columns",
    "null_share_violations",
    "raise_for_hard",
    "type_violations",
]

DTYPES = ("int", "float", "bool", "string", "category", "datetime")
_SCHEMA_VERSION = 1
_N_EXAMPLES = 5


@dataclass(frozen=True)
class ColumnRule:
    """What training data looked like in one column."""

    name: str
    dtype: str
    nullable_rate: float = 0.0
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "nullable_rate": self.nullable_rate,
            "min": self.min,
            "max": self.max,
            "categories": list(self.categories) if self.categories is not None else None,
        }


@dataclass(frozen=True)
class DataSchema:
    """The rules of every column, in the order of the training frame."""

    columns: tuple[ColumnRule, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"version": _SCHEMA_VERSION, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSchema:
        """Rebuild a schema from :meth:`to_dict` output; ``InvalidInput`` naming a bad field."""
        if not isinstance(d, dict) or not isinstance(d.get("columns"), list):
            raise InvalidInput("data schema: expected a mapping with a 'columns' list")
        rules = []
        for i, c in enumerate(d["columns"]):
            where = f"data schema: columns[{i}]"
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                raise InvalidInput(f"{where}: expected a mapping with a string 'name'")
            if c.get("dtype") not in DTYPES:
                raise InvalidInput(f"{where}.dtype: {c.get('dtype')!r} is not one of {DTYPES}")
            try:
                rate = float(c.get("nullable_rate", 0.0))
                lo = None if c.get("min") is None else float(c["min"])
                hi = None if c.get("max") is None else float(c["max"])
            except (TypeError, ValueError):
                raise InvalidInput(f"{where}: nullable_rate, min and max must be numbers") from None
            cats = c.get("categories")
            if cats is not None and not isinstance(cats, list | tuple):
                raise InvalidInput(f"{where}.categories: expected a list or null")
            rules.append(
                ColumnRule(
                    c["name"],
                    c["dtype"],
                    rate,
                    lo,
                    hi,
                    tuple(str(x) for x in cats) if cats is not None else None,
                )
            )
        return cls(tuple(rules))

    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal schemas give equal digests."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Violation:
    """One broken rule in one column; ``examples`` are a few offending values."""

    column: str
    rule: str
    severity: Literal["hard", "soft"]
    message: str
    count: int
    examples: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "count": self.count,
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class ValidationReport:
    """Every violation found in one frame."""

    violations: tuple[Violation, ...]
    n_rows: int

    @property
    def ok(self) -> bool:
        """True when no violation is hard."""
        return not self.hard

    @property
    def hard(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity == "hard")

    @property
    def soft(self) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.severity == "soft")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "n_rows": self.n_rows,
            "n_hard": len(self.hard),
            "n_soft": len(self.soft),
            "violations": [v.to_dict() for v in self.violations],
        }


class DataValidationError(InvalidInput):
    """The data broke rules of the reference schema (hard ones, or soft ones under
    ``validation.on_soft: fail``); the message lists each one. Every validation failure of a
    pipeline, a missing column included, is this error: the CLI exits with ``exit_code``."""

    http_status = 422
    exit_code = 11

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


# -- inference ---------------------------------------------------------------------------------


def _kind(name: str, s: pd.Series) -> str:
    import pandas as pd

    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dt):
        return "bool"
    if pd.api.types.is_integer_dtype(dt):
        return "int"
    if pd.api.types.is_float_dtype(dt):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dt):
        return "datetime"
    inferred = pd.api.types.infer_dtype(s, skipna=True)
    by_inferred = {
        "string": "string",
        "empty": "string",
        "boolean": "bool",
        "integer": "int",
        "floating": "float",
        "mixed-integer-float": "float",
        "datetime64": "datetime",
        "datetime": "datetime",
    }
    if inferred in by_inferred:
        return by_inferred[inferred]
    raise InvalidInput(
        f"column {name!r} holds values of mixed or unsupported types ({inferred}); convert it to "
        "one dtype (number, boolean, string, category or datetime) before validation"
    )


def infer_schema(frame: pd.DataFrame, *, max_categories: int = 200) -> DataSchema:
    """The schema of a training frame. Text and category columns with at most
    ``max_categories`` distinct values get their allowed categories; others only a type."""
    rules = []
    n = len(frame)
    for name in frame.columns:
        s = frame[name]
        kind = _kind(str(name), s)
        rate = float(s.isna().mean()) if n else 0.0
        lo = hi = None
        cats = None
        if kind in ("int", "float"):
            values = s.dropna().astype("float64")
            values = values[values.map(math.isfinite)]
            if len(values):
                lo, hi = float(values.min()), float(values.max())
        elif kind in ("string", "category"):
            distinct = sorted({str(v) for v in s.dropna().unique()})
            if len(distinct) <= max_categories:
                cats = tuple(distinct)
        rules.append(ColumnRule(str(name), kind, rate, lo, hi, cats))
    return DataSchema(tuple(rules))


# -- checking ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-safe example value."""
    if hasattr(value, "item") and not isinstance(value, str):
        with contextlib.suppress(ValueError, TypeError):
            value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _fits(rule: ColumnRule, s: pd.Series) -> bool:
    """Whether the column's values are of the rule's kind."""
    import pandas as pd

    if s.notna().sum() == 0:
        return True  # all null: the null-rate rule speaks for it
    try:
        kind = _kind(rule.name, s)
    except InvalidInput:
        return False
    if rule.dtype == kind:
        return True
    if rule.dtype == "float":
        return kind == "int"
    if rule.dtype == "int" and kind == "float":
        values = s.dropna().to_numpy(dtype="float64")
        return bool(((values % 1) == 0).all())
    if rule.dtype == "category":
        return kind == "string"
    if rule.dtype == "string" and kind == "category":
        return pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")
    return False


def _numeric_check(rule: ColumnRule, bound: float, lower: bool) -> Callable[[Any], Any]:
    def check(s: pd.Series) -> Any:
        import pandas as pd

        if not _fits(rule, s) or not pd.api.types.is_numeric_dtype(s.dtype):
            return pd.Series(True, index=s.index)
        return s >= bound if lower else s <= bound

    return check


def _category_check(rule: ColumnRule) -> Callable[[Any], Any]:
    allowed = set(rule.categories or ())

    def check(s: pd.Series) -> Any:
        import pandas as pd

        if not _fits(rule, s):
            return pd.Series(True, index=s.index)
        return s.astype(str).isin(allowed)  # nulls are skipped by pandera (ignore_na)

    return check


def _pandera_schema(schema: DataSchema, range_tolerance: float) -> Any:
    import pandera.pandas as pa

    columns = {}
    for rule in schema.columns:
        checks = [
            pa.Check(
                (lambda r: lambda s: _fits(r, s))(rule),
                name="dtype",
                element_wise=False,
            )
        ]
        if rule.dtype in ("int", "float") and rule.min is not None and rule.max is not None:
            slack = range_tolerance * (rule.max - rule.min)
            checks.append(
                pa.Check(_numeric_check(rule, rule.min - slack, True), name="min", ignore_na=True)
            )
            checks.append(
                pa.Check(_numeric_check(rule, rule.max + slack, False), name="max", ignore_na=True)
            )
        if rule.categories is not None:
            checks.append(pa.Check(_category_check(rule), name="categories", ignore_na=True))
        columns[rule.name] = pa.Column(nullable=True, required=True, checks=checks)
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _examples(values: Any) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        p = _plain(v)
        if p not in out:
            out.append(p)
        if len(out) >= _N_EXAMPLES:
            break
    return tuple(out)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def check_frame(
    frame: pd.DataFrame,
    schema: DataSchema,
    *,
    range_tolerance: float = 0.0,
    null_rate_tolerance: float = 0.02,
    unknown_category_tolerance: float = 0.01,
) -> ValidationReport:
    """Check ``frame`` against ``schema`` and report every violation (see the module doc for
    which are hard and which soft)."""
    import pandera.pandas as pa

    n = len(frame)
    found: list[Violation] = []
    failures = None
    try:
        _pandera_schema(schema, range_tolerance).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        failures = exc.failure_cases

    by_key: dict[tuple[str, str], list[Any]] = {}
    if failures is not None:
        for row in failures.itertuples(index=False):
            if row.check == "column_in_dataframe":
                key = (str(row.failure_case), "missing_column")
            else:
                key = (str(row.column), str(row.check))
            by_key.setdefault(key, []).append(row.failure_case)

    for rule in schema.columns:
        if (rule.name, "missing_column") in by_key:
            found.append(
                Violation(
                    rule.name,
                    "missing_column",
                    "hard",
                    f"column {rule.name!r}: missing (the training data had it, as {rule.dtype})",
                    n,
                )
            )
            continue
        s = frame[rule.name]
        if (rule.name, "dtype") in by_key:
            ex = _examples(s.dropna().head(50))
            found.append(
                Violation(
                    rule.name,
                    "dtype",
                    "hard",
                    f"column {rule.name!r}: expected {rule.dtype} values as in training, got "
                    f"dtype {s.dtype}, e.g. {', '.join(repr(e) for e in ex[:3])}",
                    int(s.notna().sum()),
                    ex,
                )
            )
            continue
        found.extend(_null_violations(rule, s, n, null_rate_tolerance))
        for bound_rule, word, bound in (
            ("min", "below the minimum", rule.min),
            ("max", "above the maximum", rule.max),
        ):
            bad = by_key.get((rule.name, bound_rule))
            if bad and bound is not None:
                ex = _examples(sorted(bad, reverse=bound_rule == "max"))
                found.append(
                    Violation(
                        rule.name,
                        bound_rule,
                        "soft",
                        f"column {rule.name!r}: {len(bad)} values {word} {_fmt(bound)} seen in "
                        f"training, e.g. {ex[0]!r}",
                        len(bad),
                        ex,
                    )
                )
        unknown = by_key.get((rule.name, "categories"))
        if unknown:
            non_null = max(int(s.notna().sum()), 1)
            share = len(unknown) / non_null
            severity: Literal["hard", "soft"] = (
                "hard" if share > unknown_category_tolerance else "soft"
            )
            ex = _examples(unknown)
            found.append(
                Violation(
                    rule.name,
                    "categories",
                    severity,
                    f"column {rule.name!r}: {len(unknown)} values ({share:.1%}) are categories "
                    f"not seen in training (tolerated: {unknown_category_tolerance:.1%}), "
                    f"e.g. {', '.join(repr(e) for e in ex[:3])}",
                    len(unknown),
                    ex,
                )
            )
    return ValidationReport(tuple(found), n)


def _null_violations(rule: ColumnRule, s: pd.Series, n: int, tol: float) -> list[Violation]:
    if n == 0:
        return []
    nulls = int(s.isna().sum())
    rate = nulls / n
    rise = rate - rule.nullable_rate
    if rise <= 0:
        return []
    seen = (
        "a column that had none in training"
        if rule.nullable_rate == 0
        else f"a column with {rule.nullable_rate:.2%} nulls in training"
    )
    severity: Literal["hard", "soft"] = "hard" if rise > tol else "soft"
    return [
        Violation(
            rule.name,
            "nulls",
            severity,
            f"column {rule.name!r}: {nulls} null values ({rate:.2%}) in {seen} "
            f"(tolerated rise: {tol:.2%})",
            nulls,
        )
    ]


def raise_for_hard(report: ValidationReport) -> None:
    """Raise :class:`DataValidationError` listing each hard violation; do nothing if none."""
    enforce(report, "warn")


#: What soft violations do to a pipeline run (``validation.on_soft``).
SOFT_POLICIES = ("warn", "hold", "fail")


def enforce(report: ValidationReport, on_soft: str) -> None:
    """The one place that decides whether a validation report stops a run: hard violations
    always do; soft ones when ``on_soft`` is ``fail`` (under ``warn`` and ``hold`` the run goes
    on and registration reads the report). Raises :class:`DataValidationError` listing what
    stopped it."""
    if on_soft not in SOFT_POLICIES:
        raise InvalidInput(f"validation.on_soft: {on_soft!r} is not one of {SOFT_POLICIES}")
    hard = report.hard
    soft = report.soft if on_soft == "fail" else ()
    if not hard and not soft:
        return
    parts = []
    if hard:
        parts.append(f"{len(hard)} hard violation(s)")
    if soft:
        parts.append(f"{len(soft)} soft violation(s) (validation.on_soft: fail)")
    lines = [f"data validation failed: {' and '.join(parts)} in {report.n_rows} rows"]
    lines += [f"- [{v.rule}] {v.message}" for v in (*hard, *soft)]
    raise DataValidationError("\n".join(lines), report)


def missing_columns(frame_columns: Any, wanted: dict[str, str], n_rows: int) -> ValidationReport:
    """A report with one hard ``missing_column`` violation per column of ``wanted`` (name →
    the spec field naming it) that ``frame_columns`` lacks."""
    have = [str(c) for c in frame_columns]
    found = [
        Violation(
            name,
            "missing_column",
            "hard",
            f"column {name!r}: missing (named in {role}); the data has: {', '.join(have)}",
            n_rows,
        )
        for name, role in wanted.items()
        if name not in have
    ]
    return ValidationReport(tuple(found), n_rows)


def type_violations(frame: pd.DataFrame) -> ValidationReport:
    """A hard ``dtype`` violation per column holding values of mixed or unsupported types (no
    schema can be inferred for it)."""
    found = []
    for name in frame.columns:
        s = frame[name]
        try:
            _kind(str(name), s)
        except InvalidInput as exc:
            ex = _examples(s.dropna().head(50))
            found.append(Violation(str(name), "dtype", "hard", str(exc), int(s.notna().sum()), ex))
    return ValidationReport(tuple(found), len(frame))


def null_share_violations(
    frame: pd.DataFrame, max_null_rate: float, where: str
) -> tuple[Violation, ...]:
    """A hard ``nulls`` violation per column of ``frame`` whose share of nulls exceeds
    ``max_null_rate`` (used when no reference schema says what rate a column may have)."""
    n = len(frame)
    found = []
    for name in frame.columns:
        nulls = int(frame[name].isna().sum())
        if not n or nulls / n <= max_null_rate:
            continue
        found.append(
            Violation(
                str(name),
                "nulls",
                "hard",
                f"column {str(name)!r}: {nulls} null values ({nulls / n:.2%}) in {where}, above "
                f"validation.max_null_rate ({max_null_rate:.2%}); raise it, or declare the "
                "column's null rate in a schema file (validation.reference)",
                nulls,
            )
        )
    return tuple(found)
