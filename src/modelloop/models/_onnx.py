"""Optional onnxruntime fast path: a model converted with skl2onnx, kept only if it agrees.

:func:`try_onnx` converts a package's estimator and runs both on a check set (the caller's rows
or the package's input example, plus one row with a missing value per column that admits one).
Class labels must be equal and probabilities (or regression values) close; otherwise the server
keeps predicting with scikit-learn. Nothing here raises: every failure is a reason string.

Inputs: when every signature column is numeric or boolean, the model gets one float32 tensor
``[None, n_columns]`` (the fastest form). When some columns are strings or string categories,
each column is its own input (``[None, 1]``, float32 or string) named after the column, which
suits a ``Pipeline`` whose ``ColumnTransformer`` selects columns by name. Datetime columns and
categories that are not strings are declined.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop._text import brief
from modelloop.models._package import INPUT_EXAMPLE_FILE

if TYPE_CHECKING:
    import pandas as pd

    from modelloop.models import ModelPackage, Signature

__all__ = ["Disagreement", "OnnxPredictor", "convert_in_subprocess", "try_onnx"]

_NUMERIC = frozenset(
    (
        "bool",
        "boolean",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "float32",
        "float64",
        "Float32",
        "Float64",
    )
)


class Disagreement(str):
    """A reason meaning the converted model ran but disagrees with scikit-learn on the check
    set (as opposed to a model that cannot be converted, or check data that does not fit)."""


class OnnxPredictor:
    """Predictions from an onnxruntime session, in the shapes and labels scikit-learn returns.

    ``predict``/``predict_proba`` take a frame already validated by the signature (columns in
    signature order, canonical dtypes). Safe to call from several threads at once.
    """

    def __init__(
        self,
        session: Any,
        onnx_model: bytes,
        *,
        columns: Sequence[str],
        string_columns: frozenset[str] | None,
        masked: bool,
        classes: np.ndarray | None,
        has_proba: bool,
        conversion_seconds: float,
        labels_from_proba: bool = False,
        tie_atol: float = 0.0,
    ) -> None:
        self._session = session
        self.onnx_model = onnx_model
        self.sha256 = hashlib.sha256(onnx_model).hexdigest()
        self.columns = list(columns)
        #: None: one float tensor of all columns; else one input per column (these are strings)
        self.string_columns = string_columns
        self._masked = masked  # some column has a pandas masked dtype (Int64, boolean, ...)
        self.classes = classes
        self.conversion_seconds = conversion_seconds
        #: rows of the check set it agreed with scikit-learn on (0 when loaded from a file)
        self.check_rows = 0
        outputs = [o.name for o in session.get_outputs()]
        self._label_output = outputs[0]
        self._proba_output = outputs[1] if classes is not None and has_proba else None
        #: labels are classes[argmax(proba)], as scikit-learn computes them (ties: first class)
        self.labels_from_proba = labels_from_proba and self._proba_output is not None
        #: probabilities this close to the largest count as tied (averaging models only)
        self.tie_atol = tie_atol
        self._label_keys: np.ndarray | None = None  # classes as the ONNX label output spells them
        self._key_order: np.ndarray | None = None

    @property
    def has_proba(self) -> bool:
        """Whether the model gives class probabilities."""
        return self._proba_output is not None

    @property
    def input_mode(self) -> str:
        """``"tensor"`` (one float matrix) or ``"columns"`` (one input per column)."""
        return "tensor" if self.string_columns is None else "columns"

    def _feeds(self, frame: pd.DataFrame | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(frame, np.ndarray):  # already the float32 matrix of the tensor input
            if self.string_columns is not None:
                raise ValueError("this model takes one input per column, not a matrix")
            return {"X": frame}
        if self.string_columns is None:
            if frame.columns.tolist() != self.columns:
                frame = frame[self.columns]
            if self._masked:  # pd.NA becomes NaN, as scikit-learn sees it
                return {"X": frame.to_numpy(dtype=np.float32, na_value=np.nan)}
            return {"X": frame.to_numpy(dtype=np.float32)}
        feeds = {}
        for name in self.columns:
            s = frame[name]
            if name in self.string_columns:
                values = s.astype(object).where(s.notna(), "").to_numpy()
                feeds[name] = values.astype(str).reshape(-1, 1)
            else:
                feeds[name] = s.to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
        return feeds

    def _run(self, frame: pd.DataFrame | np.ndarray) -> list[np.ndarray]:
        names = [self._label_output] + ([self._proba_output] if self._proba_output else [])
        return self._session.run(names, self._feeds(frame))

    def _labels(self, raw: np.ndarray) -> np.ndarray:
        assert self.classes is not None
        if self._label_keys is None:
            if raw.dtype.kind in "iu":
                keys = np.array([int(c) for c in self.classes.tolist()], dtype=np.int64)
            else:
                keys = np.array([str(c) for c in self.classes.tolist()], dtype=object)
            self._key_order = np.argsort(keys, kind="stable")
            self._label_keys = keys[self._key_order]
        assert self._key_order is not None
        keys = self._label_keys
        pos = np.searchsorted(keys, raw.astype(keys.dtype) if keys.dtype != object else raw)
        pos = np.minimum(pos, len(keys) - 1)
        if not np.array_equal(keys[pos], raw):
            raise ValueError("the ONNX model returned a label that is not one of the classes")
        return self.classes.take(self._key_order[pos])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted labels (classifiers, as ``classes_`` values) or values (regressors)."""
        if self.labels_from_proba:
            return self.predict_both(frame)[0]
        out = self._run(frame)[0]
        if self.classes is not None:
            return self._labels(out.ravel())
        out = np.asarray(out, dtype=np.float64)
        return out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Class probabilities (float64, one column per class), or None for a regressor."""
        if self._proba_output is None:
            return None
        return np.asarray(self._run(frame)[1], dtype=np.float64)

    def predict_both(
        self, frame: pd.DataFrame | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels and probabilities from one session run; ``frame`` may be the float32 matrix
        of a ``"tensor"`` model's inputs, in signature order."""
        out = self._run(frame)
        if self.classes is None:
            values = np.asarray(out[0], dtype=np.float64)
            return (values.ravel() if values.ndim == 2 and values.shape[1] == 1 else values), None
        proba = np.asarray(out[1], dtype=np.float64) if len(out) > 1 else None
        if self.labels_from_proba and proba is not None:
            assert self.classes is not None
            if not self.tie_atol:
                return self.classes[np.argmax(proba, axis=1)], proba
            # an averaging model's exact ties go to the first class in scikit-learn; float32
            # sums turn them into gaps of ~1e-7, so classes within tie_atol of the top are tied
            tied = proba >= proba.max(axis=1, keepdims=True) - self.tie_atol
            return self.classes[np.argmax(tied, axis=1)], proba
        return self._labels(out[0].ravel()), proba


def try_onnx(
    package: ModelPackage,
    check: pd.DataFrame | None = None,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    intra_op_threads: int = 1,
    blob: bytes | None = None,
) -> tuple[OnnxPredictor | None, str]:
    """An :class:`OnnxPredictor` for ``package`` if it agrees with scikit-learn, else a reason.

    Returns ``(predictor, "")`` on success, ``(None, reason)`` otherwise; never raises. The check
    set is ``check`` or the package's input example, validated by the signature, with at least
    one row. Class labels must be equal on every check row; probabilities must lie within
    ``atol``; regression values within ``atol + rtol * |value|`` (ONNX computes in float32).
    The session runs ``intra_op_threads`` threads, sequentially. ``blob`` is an ONNX model
    converted before (see :func:`convert_in_subprocess`); without it the model is converted here.
    """
    try:
        return _try_onnx(package, check, atol, rtol, intra_op_threads, blob)
    except Exception as e:  # a converter or runtime bug must never stop the server
        return None, f"ONNX conversion failed unexpectedly: {type(e).__name__}: {e}"


def _try_onnx(
    package: ModelPackage,
    check: pd.DataFrame | None,
    atol: float,
    rtol: float,
    intra_op_threads: int,
    given: bytes | None = None,
) -> tuple[OnnxPredictor | None, str]:
    if given is None:
        try:
            import skl2onnx  # noqa: F401
        except ImportError:
            return None, "skl2onnx is not installed"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, "onnxruntime is not installed"

    signature, model = package.signature, package.model
    if signature is None:
        return None, "the package has no signature, so the ONNX inputs are unknown"
    frame, added, why = _check_frame(package, signature, check)
    if frame is None:
        return None, why
    string_columns, why = _input_kinds(signature)
    if why:
        return None, why

    classes, has_proba, why = _classes(model, signature)
    if why:
        return None, why
    start = time.perf_counter()
    try:
        blob = (
            given
            if given is not None
            else _convert(model, signature, string_columns, classes, has_proba)
        )
        session = _session(blob, intra_op_threads)
    except Exception as e:  # skl2onnx raises many types for what it cannot convert
        return None, f"skl2onnx cannot convert {type(model).__name__}: {brief(e)}"
    seconds = time.perf_counter() - start
    predictor = OnnxPredictor(
        session,
        blob,
        columns=signature.columns,
        string_columns=string_columns,
        masked=any(not _numpy_dtype(c.dtype) for c in signature.inputs),
        classes=classes,
        has_proba=has_proba,
        conversion_seconds=seconds,
        labels_from_proba=has_proba and labels_from_proba(model),
        tie_atol=tie_tolerance(model),
    )
    return _compare(predictor, model, frame, added, atol, rtol)


def _convert(
    model: Any,
    signature: Signature,
    string_columns: frozenset[str] | None,
    classes: np.ndarray | None,
    has_proba: bool,
) -> bytes:
    """The model as ONNX bytes: one float tensor, or one tensor per column with strings."""
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    options = None
    if classes is not None and has_proba:
        options = {id(final_step(model)): {"zipmap": False}}
    if string_columns is None:
        initial_types = [("X", FloatTensorType([None, len(signature.inputs)]))]
    else:
        initial_types = [
            (
                c.name,
                StringTensorType([None, 1])
                if c.name in string_columns
                else FloatTensorType([None, 1]),
            )
            for c in signature.inputs
        ]
    onx = skl2onnx.convert_sklearn(model, initial_types=initial_types, options=options)
    return bytes(onx.SerializeToString())


def convert_in_subprocess(
    folder: Path,
    out: Path,
    *,
    trusted_types: Sequence[str] = (),
    check: Path | None = None,
    timeout_s: float = 300,
) -> tuple[str, bool]:
    """Convert and check the package in ``folder`` in a child process; return ``("", False)``,
    or the reason it failed and whether that reason is a :class:`Disagreement` on the check set
    (a refusal remembered from before says False: the marker keeps only the reason).

    The child loads the package (same trusted types, never pickle), converts it with skl2onnx,
    and checks the ONNX model against scikit-learn as :func:`try_onnx` does, on the rows of the
    Parquet file ``check`` or else on the input example; only a model that passed is written, to
    ``out`` with its description beside it (``out`` + ``.json``). Neither the converter nor
    scikit-learn enters this process, and the files are reused on the next start:
    :func:`load_checked` reads them. A model the check refuses is remembered too (``out`` +
    ``.failed``, holding the reason; delete it to retry).
    """
    import subprocess

    if out.is_file() and _meta_path(out).is_file():
        return "", False
    failed = out.with_name(out.name + ".failed")
    if failed.is_file():  # tried before and refused: say why again without another try
        reason = failed.read_text(errors="replace").strip()
        return reason or "ONNX conversion failed before", False
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "modelloop.models._onnx",
        str(folder),
        str(out),
        json.dumps(list(trusted_types)),
        *([str(check)] if check is not None else []),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"ONNX conversion took longer than {timeout_s:.0f} s", False
    if done.returncode != 0 or not out.is_file():
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        reason = lines[-1] if lines else f"the ONNX converter exited with {done.returncode}"
        if done.returncode in (_REFUSED, _DISAGREED):  # refused, not a crash: remember it
            from modelloop._fs import atomic_file

            with atomic_file(failed) as fh:
                fh.write(reason.encode())
        return reason, done.returncode == _DISAGREED
    return "", False


# exit codes of the converter child: refused (cannot convert, bad check set), disagreed (the
# converted model differs from scikit-learn on the check set); anything else is a crash
_REFUSED, _DISAGREED = 1, 4


def _meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def read_meta(out: Path) -> dict[str, Any]:
    """The description :func:`convert_in_subprocess` wrote beside a checked model."""
    meta: dict[str, Any] = json.loads(_meta_path(out).read_text())
    return meta


def _session(blob: bytes, intra_op_threads: int) -> Any:
    """An onnxruntime session on the CPU, running ``intra_op_threads`` threads sequentially."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])


def load_checked(out: Path, signature: Signature, *, intra_op_threads: int = 1) -> OnnxPredictor:
    """An :class:`OnnxPredictor` from files :func:`convert_in_subprocess` wrote and checked."""
    return predictor_from(out.read_bytes(), read_meta(out), signature, intra_op_threads)


def predictor_from(
    blob: bytes, meta: Mapping[str, Any], signature: Signature, intra_op_threads: int = 1
) -> OnnxPredictor:
    """An :class:`OnnxPredictor` from a checked ONNX model and its description (no scikit-learn
    needed)."""
    session = _session(blob, intra_op_threads)
    classes = meta["classes"]
    strings = meta["string_columns"]
    predictor = OnnxPredictor(
        session,
        blob,
        columns=signature.columns,
        string_columns=None if strings is None else frozenset(strings),
        masked=any(not _numpy_dtype(c.dtype) for c in signature.inputs),
        classes=None if classes is None else np.asarray(classes, dtype=meta["classes_dtype"]),
        has_proba=meta["has_proba"],
        conversion_seconds=float(meta.get("conversion_seconds", 0.0)),
        labels_from_proba=bool(meta.get("labels_from_proba", False)),
        tie_atol=float(meta.get("tie_atol", TIE_ATOL if meta.get("labels_from_proba") else 0.0)),
    )
    predictor.check_rows = int(meta.get("check_rows", 0))
    return predictor


def _main(argv: Sequence[str]) -> int:
    """``python -m modelloop.models._onnx PACKAGE_DIR OUT TRUSTED_JSON [CHECK_PARQUET]``:
    convert and check."""
    from importlib.metadata import version

    from modelloop._fs import atomic_file
    from modelloop.models import load_model

    package_dir, out, trusted, *rest = argv
    package = load_model(Path(package_dir), trusted_types=json.loads(trusted), allow_pickle=False)
    check = None
    if rest:
        import pandas as pd

        check = pd.read_parquet(rest[0])
    predictor, reason = try_onnx(package, check)
    if predictor is None:
        print(reason, file=sys.stderr)
        return _DISAGREED if isinstance(reason, Disagreement) else _REFUSED
    classes = predictor.classes
    meta = {
        "classes": None if classes is None else classes.tolist(),
        "classes_dtype": None if classes is None else classes.dtype.str,
        "has_proba": predictor.has_proba,
        "labels_from_proba": predictor.labels_from_proba,
        "tie_atol": predictor.tie_atol,
        "string_columns": None
        if predictor.string_columns is None
        else sorted(predictor.string_columns),
        "conversion_seconds": predictor.conversion_seconds,
        "check_rows": predictor.check_rows,
        "libraries": {
            lib: version(lib) for lib in ("scikit-learn", "skl2onnx", "onnx", "onnxruntime")
        },
    }
    target = Path(out)
    with atomic_file(_meta_path(target)) as fh:
        fh.write(json.dumps(meta).encode())
    with atomic_file(target) as fh:  # written last: its presence means "converted and checked"
        fh.write(predictor.onnx_model)
    return 0


def _numpy_dtype(dtype: str) -> bool:
    return dtype in _NUMERIC and dtype != "boolean" and dtype[0].islower()


def final_step(model: Any) -> Any:
    """The estimator at the end of a (possibly nested) ``Pipeline``, or ``model`` itself."""
    while hasattr(model, "steps"):
        model = model.steps[-1][1]
    return model


#: For models whose probabilities are averages of per-tree (or per-neighbour) fractions, where
#: exact ties are common: probabilities this close to the largest count as a tie.
TIE_ATOL = 1e-5
_AVERAGING = frozenset(
    (
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
    )
)

# Classifiers whose predict() is the argmax of predict_proba() (ties go to the first class).
_ARGMAX_CLASSIFIERS = frozenset(
    (
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "HistGradientBoostingClassifier",
        "GradientBoostingClassifier",
        "LogisticRegression",
        "KNeighborsClassifier",
    )
)


def tie_tolerance(model: Any) -> float:
    """:data:`TIE_ATOL` for averaging models (forests, trees, uniform k-NN), else 0: for models
    with continuous probabilities a tiny gap is a real difference, not a broken tie."""
    final = final_step(model)
    name = type(final).__name__
    uniform_knn = name == "KNeighborsClassifier" and getattr(final, "weights", None) == "uniform"
    averaging = name in _AVERAGING or uniform_knn
    return TIE_ATOL if averaging and type(final).__module__.startswith("sklearn.") else 0.0


def labels_from_proba(model: Any) -> bool:
    """Whether ``model``'s labels are ``classes_[argmax(predict_proba)]``: then one call gives
    both, and ties resolve as scikit-learn resolves them."""
    final = final_step(model)
    return (
        type(final).__module__.startswith("sklearn.")
        and type(final).__name__ in _ARGMAX_CLASSIFIERS
        and hasattr(final, "classes_")
        and hasattr(model, "predict_proba")
    )


def _classes(model: Any, signature: Signature) -> tuple[np.ndarray | None, bool, str]:
    """The classifier's classes (None for a regressor) and whether it predicts probabilities."""
    from sklearn.base import is_classifier

    if not (is_classifier(model) or signature.task == "classification"):
        return None, False, ""
    classes = getattr(model, "classes_", None)
    if classes is None:
        return None, False, f"{type(model).__name__} has no classes_"
    if isinstance(classes, list):
        return None, False, "multi-output classifiers are not converted to ONNX"
    return np.asarray(classes), hasattr(model, "predict_proba"), ""


def _input_kinds(signature: Signature) -> tuple[frozenset[str] | None, str]:
    """None when every column is numeric (one tensor), else the string columns."""
    strings = set()
    for spec in signature.inputs:
        if spec.dtype in _NUMERIC:
            continue
        if spec.dtype == "string" or (
            spec.dtype == "category" and all(isinstance(c, str) for c in spec.categories or ())
        ):
            strings.add(spec.name)
            continue
        return None, f"column {spec.name!r} ({spec.dtype}) has no ONNX input form here"
    return (frozenset(strings) if strings else None), ""


def _check_frame(
    package: ModelPackage, signature: Signature, check: pd.DataFrame | None
) -> tuple[pd.DataFrame | None, dict[int, str], str]:
    """The validated check rows plus one row per column that admits a missing value.

    The middle item describes each added row by its position, for the reasons.
    """
    import pandas as pd

    from modelloop.exceptions import ModelloopError

    if check is None:
        path = package.path / INPUT_EXAMPLE_FILE
        try:
            raw: Any = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None, {}, "no check set: pass one or save the model with an input example"
        except (OSError, ValueError) as e:
            return None, {}, f"cannot read {path}: {e}"
        if not isinstance(raw, list):
            return None, {}, f"{path} is not a list of records"
        check_data: Any = raw
    else:
        check_data = check
    try:
        frame = signature.validate(check_data)
    except ModelloopError as e:
        return None, {}, f"the check set does not fit the signature: {e}"
    if len(frame) == 0:
        return None, {}, "the check set has no rows"
    frame = frame.reset_index(drop=True)
    extra: list[pd.DataFrame] = []
    added: dict[int, str] = {}
    for spec in signature.inputs:
        if spec.missing_allowed:  # the example may hold no missing value; the traffic may
            row = frame.iloc[[0]].copy()
            row[spec.name] = None
            added[len(frame) + len(extra)] = f"row 0 with {spec.name!r} missing"
            extra.append(row)
    if extra:
        try:
            return signature.validate(pd.concat([frame, *extra], ignore_index=True)), added, ""
        except ModelloopError:  # keep the plain check set
            pass
    return frame, {}, ""


def _compare(
    predictor: OnnxPredictor,
    model: Any,
    frame: pd.DataFrame,
    added: dict[int, str],
    atol: float,
    rtol: float,
) -> tuple[OnnxPredictor | None, str]:
    n = len(frame)
    try:
        expected = np.asarray(model.predict(frame))
        expected_proba = np.asarray(model.predict_proba(frame)) if predictor._proba_output else None
    except Exception as e:  # the model itself fails on the check set
        return None, f"scikit-learn fails on the check set: {brief(e)}"
    try:
        got, got_proba = predictor.predict_both(frame)
    except Exception as e:
        return None, Disagreement(f"onnxruntime fails on the check set: {brief(e)}")

    if predictor.classes is not None:
        if got.shape != expected.shape:
            return None, Disagreement(
                f"ONNX labels have shape {got.shape}, scikit-learn {expected.shape}"
            )
        differ = np.flatnonzero(got != expected)
    else:
        if got.size != expected.size:
            return None, Disagreement(
                f"ONNX values have shape {got.shape}, scikit-learn {expected.shape}"
            )
        got = got.reshape(expected.shape)
        ok = np.isclose(got, expected.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True)
        differ = np.flatnonzero(~ok.reshape(n, -1).all(axis=1))
    if len(differ):
        i = int(differ[0])
        return None, Disagreement(
            f"{len(differ)} of {n} check rows differ; first at row {_row(i, added)}: scikit-learn "
            f"{_show(expected[i])}, onnxruntime {_show(got[i])}"
        )
    if expected_proba is not None:
        if got_proba is None or got_proba.shape != expected_proba.shape:
            shape = None if got_proba is None else got_proba.shape
            return None, Disagreement(
                f"ONNX probabilities have shape {shape}, scikit-learn {expected_proba.shape}"
            )
        gap = np.abs(got_proba - expected_proba)
        bad = np.flatnonzero((gap > atol).any(axis=1))
        if len(bad):
            i = int(bad[0])
            return None, Disagreement(
                f"probabilities differ by more than {atol:g} on {len(bad)} of {n} check rows; "
                f"first at row {_row(i, added)} (largest gap {float(gap[i].max()):.3g})"
            )
    predictor.check_rows = n
    return predictor, ""


def _row(i: int, added: dict[int, str]) -> str:
    return f"{i} (added: {added[i]})" if i in added else str(i)


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return repr(value.tolist())
    return repr(value.item() if isinstance(value, np.generic) else value)


if __name__ == "__main__":
    try:
        code = _main(sys.argv[1:])
    except Exception as e:  # a crash, not a refusal: exit 3 so the caller does not remember it
        print(f"the ONNX converter failed: {brief(e)}", file=sys.stderr)
        code = 3
    sys.exit(code)
