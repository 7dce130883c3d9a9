"""The model package: a directory holding the estimator, its signature and its metadata.

Layout::

    model.skops          the estimator, written by skops (model.pkl with serialization="pickle")
    signature.json       Signature.to_json(), when a signature is known
    metadata.json        format, file digest, model class, library versions, user metadata
    input_example.json   the input example as a list of records, when one is given
    trees.npz, trees.json  a HistGradientBoosting model's tree form, when it has one (see
                         modelloop.models._trees): served with NumPy, no scikit-learn

Loading trusts only modelloop's configuration — never anything the package itself declares: the
skops types it may construct come from :class:`modelloop._config.Settings` and the caller, and
pickle is refused unless the caller opts in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelloop._config import Settings
from modelloop._fs import fsync_dir
from modelloop.exceptions import (
    ArtifactCorrupted,
    Conflict,
    InvalidInput,
    NotFound,
    UnsafeArtifact,
)
from modelloop.models._guard import GUARDED_TYPES
from modelloop.models._signature import Signature, infer_signature
from modelloop.models._trees import BuiltForm, build_tree_form

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("modelloop.models")

__all__ = ["MODEL_LOCAL_TRUSTED_TYPES", "ModelPackage", "load_model", "save_model"]

FORMAT_VERSION = 1
MODEL_FILES = {"skops": "model.skops", "pickle": "model.pkl"}
SIGNATURE_FILE = "signature.json"
METADATA_FILE = "metadata.json"
INPUT_EXAMPLE_FILE = "input_example.json"

#: Types trusted on top of ``Settings.trusted_types`` when loading a skops file: scikit-learn
#: internals that skops 0.16 does not list but that hold only numbers and arrays (or are pure
#: functions called during fit). The two tree types are trusted only because
#: :mod:`modelloop.models._guard` checks their node arrays on every load.
MODEL_LOCAL_TRUSTED_TYPES: tuple[str, ...] = (
    *GUARDED_TYPES,
    "sklearn.utils._bunch.Bunch",  # named members of Voting*/Stacking*
    "sklearn.utils.validation.check_array",  # HistGradientBoosting's categorical preprocessor
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.feature_selection._univariate_selection.chi2",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.feature_selection._univariate_selection.f_regression",
    "sklearn.feature_selection._univariate_selection.r_regression",
    "sklearn.feature_selection._mutual_info.mutual_info_classif",
    "sklearn.feature_selection._mutual_info.mutual_info_regression",
)

_RESERVED = frozenset(
    (
        "format_version",
        "serialization",
        "model_file",
        "model_sha256",
        "flavor",
        "model_class",
        "created_at",
        "libraries",
        "tree_form",
    )
)


@dataclass(frozen=True)
class ModelPackage:
    """A loaded model with its signature and metadata; predictions enforce the signature."""

    model: Any
    signature: Signature | None
    metadata: Mapping[str, Any]
    path: Path

    def _frame(self, data: Any) -> Any:
        if self.signature is not None:
            return self.signature.validate(data)
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return data
        try:
            return pd.DataFrame(data)
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"cannot read the input as a table: {e}") from e

    def predict(self, data: Any) -> np.ndarray:
        """Predictions for ``data`` (DataFrame, mapping of columns, or records).

        The input is validated against the signature first (``SchemaMismatch`` names the column).
        """
        frame = self._frame(data)
        try:
            return np.asarray(self.model.predict(frame))
        except (ValueError, TypeError) as e:  # the estimator rejected values the caller sent
            raise InvalidInput(f"the model rejected the input: {e}") from e

    def predict_proba(self, data: Any) -> np.ndarray:
        """Class probabilities for ``data``, one column per class in ``signature.classes`` order.

        ``InvalidInput`` if the model is not a probabilistic classifier.
        """
        if (self.signature is not None and self.signature.task == "regression") or not hasattr(
            self.model, "predict_proba"
        ):
            raise InvalidInput(f"{type(self.model).__name__} does not predict class probabilities")
        frame = self._frame(data)
        try:
            return np.asarray(self.model.predict_proba(frame))
        except (ValueError, TypeError) as e:
            raise InvalidInput(f"the model rejected the input: {e}") from e


# -- saving ------------------------------------------------------------------------------------


def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    signature: Signature | None = None,
    input_example: pd.DataFrame | None = None,
    metadata: Mapping[str, Any] | None = None,
    serialization: Literal["skops", "pickle"] = "skops",
    training_data: pd.DataFrame | None = None,
    categorical: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    unseen: Literal["refuse", "accept"] = "accept",
) -> Path:
    """Write ``model`` as a package directory at ``path`` and return that path.

    Without a ``signature``, one is inferred from ``training_data`` (the model's inputs as
    trained, which gives string columns their categories) or else ``input_example``, and from
    the model's classes and predictions; ``categorical`` and ``unseen`` are passed to
    :func:`~modelloop.models.infer_signature`. User ``metadata`` (run id, dataset digest, ...)
    must be JSON-serialisable and may not use the keys modelloop writes. ``Conflict`` if ``path``
    exists and is not an empty directory. The package appears whole or not at all: it is written
    beside ``path`` and renamed.
    """
    if serialization not in MODEL_FILES:
        raise InvalidInput(f"serialization must be 'skops' or 'pickle', got {serialization!r}")
    if signature is not None and (
        training_data is not None or categorical is not None or unseen != "accept"
    ):
        raise InvalidInput(
            "give either a signature or what to infer it from (training_data, categorical, "
            "unseen), not both"
        )
    target = Path(path).expanduser().absolute()
    _require_empty(target)
    user_meta = dict(metadata or {})
    clash = sorted(_RESERVED & user_meta.keys())
    if clash:
        raise InvalidInput(f"metadata keys {clash} are reserved for modelloop")
    example_json = None
    source_rows = training_data if training_data is not None else input_example
    if signature is None and source_rows is not None:
        signature = _infer_from_example(model, source_rows, categorical, unseen)
    if input_example is not None:
        assert signature is not None
        signature.validate(input_example)  # a package must accept its own example
        example_json = _records_json(input_example)

    blob = _serialize(model, serialization)
    model_file = MODEL_FILES[serialization]
    meta = {
        "format_version": FORMAT_VERSION,
        "serialization": serialization,
        "model_file": model_file,
        "model_sha256": hashlib.sha256(blob).hexdigest(),
        "flavor": "sklearn",
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "created_at": int(time.time() * 1000),
        "libraries": _library_versions(),
        **user_meta,
    }
    files = {model_file: blob}
    form = build_tree_form(model, signature, source_rows)
    if isinstance(form, BuiltForm):
        files.update(form.files)
        meta["tree_form"] = {"sha256": form.sha256, "check_rows": form.check_rows}
    elif form:
        log.warning("%s: no tree form (the server predicts it with scikit-learn): %s", target, form)
    files[METADATA_FILE] = _dump_json(meta, "metadata")
    if signature is not None:
        files[SIGNATURE_FILE] = signature.to_json().encode()
    if example_json is not None:
        files[INPUT_EXAMPLE_FILE] = example_json
    _write_dir(target, files)
    return target


def _require_empty(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise Conflict(f"{target} already exists and is not an empty directory")


def _infer_from_example(
    model: Any, example: Any, categorical: Any = None, unseen: Any = "accept"
) -> Signature:
    import pandas as pd

    if not isinstance(example, pd.DataFrame):
        raise InvalidInput(
            f"input_example and training_data must be DataFrames, got {type(example).__name__}"
        )
    y = None
    if hasattr(model, "predict") and len(example):
        try:  # the outputs' dtype comes from what the model really returns
            y = model.predict(example.head(100))
        except Exception:  # an unfitted or picky model: the signature just has no outputs
            y = None
    return infer_signature(example, y, model=model, categorical=categorical, unseen=unseen)


def _serialize(model: Any, serialization: str) -> bytes:
    if serialization == "pickle":
        import pickle

        try:
            return pickle.dumps(model, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise InvalidInput(f"cannot pickle {type(model).__name__}: {e}") from e
    import skops.io

    try:
        return skops.io.dumps(model)
    except Exception as e:  # skops raises several types for objects it cannot represent
        raise InvalidInput(
            f"skops cannot serialize {type(model).__name__}: {e}. "
            "serialization='pickle' can, but loading it then needs allow_pickle=True"
        ) from e


def _write_dir(target: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into a fresh directory beside ``target`` and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a package is an ordinary directory
        fsync_dir(tmp)
        _require_empty(target)
        try:
            os.rename(tmp, target)  # atomic; replaces only an empty directory
        except OSError as e:  # someone filled the directory meanwhile
            raise Conflict(f"{target} already exists and is not an empty directory") from e
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("scikit-learn", "numpy", "pandas", "skops", "modelloop"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):  # datetime, date, pd.Timestamp
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dump_json(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, indent=2, default=_json_default, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{what} cannot be written as JSON: {e}") from e


def _records_json(frame: pd.DataFrame) -> bytes:
    """The frame as a JSON list of records; missing values become null."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return _dump_json(rows, "input_example")


# -- loading -----------------------------------------------------------------------------------


def load_model(
    path: str | os.PathLike[str],
    *,
    trusted_types: Sequence[str] | None = None,
    allow_pickle: bool = False,
    settings: Settings | None = None,
) -> ModelPackage:
    """Load the package at ``path``, refusing anything that could run untrusted code.

    A skops file may hold only types skops trusts by default, ``settings.trusted_types`` (the
    given settings; without them, ``Settings.from_env()``, which reads
    ``MODELLOOP_TRUSTED_TYPES``), :data:`MODEL_LOCAL_TRUSTED_TYPES` and ``trusted_types``;
    otherwise ``UnsafeArtifact`` names each other type. A pickle file is refused with
    ``UnsafeArtifact`` unless ``allow_pickle`` is true. The model file must match the digest in
    ``metadata.json`` (``ArtifactCorrupted`` otherwise), checked before anything is deserialised.
    The digest detects damage, not a malicious author: only load pickle from sources you trust.
    """
    root = Path(path).expanduser().absolute()
    if not root.is_dir():
        raise NotFound(f"no model package at {root}")
    meta = _read_json(root / METADATA_FILE, "metadata")
    if not isinstance(meta, dict):
        raise ArtifactCorrupted(f"{root / METADATA_FILE} is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InvalidInput(f"package format {version!r} is not one this modelloop reads; upgrade")
    serialization = meta.get("serialization")
    if serialization not in MODEL_FILES:
        raise ArtifactCorrupted(f"unknown serialization {serialization!r} in {root}")
    model_file = MODEL_FILES[serialization]  # fixed name: never a path taken from the package
    if meta.get("model_file") != model_file:
        raise ArtifactCorrupted(f"metadata names model file {meta.get('model_file')!r}")
    if serialization == "pickle" and not allow_pickle:
        raise UnsafeArtifact(
            f"{root} holds a pickle file, and unpickling runs arbitrary code; pass "
            "allow_pickle=True only if you trust where it came from"
        )
    try:
        blob = (root / model_file).read_bytes()
    except FileNotFoundError:
        raise ArtifactCorrupted(f"{root} has no {model_file}") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != meta.get("model_sha256"):
        raise ArtifactCorrupted(
            f"{root / model_file} has sha256 {digest}, metadata records "
            f"{meta.get('model_sha256')!r}: the file was altered or truncated"
        )
    if serialization == "pickle":
        model = _unpickle(blob, root)
    else:
        if isinstance(trusted_types, str):
            raise InvalidInput("trusted_types must be a list of type names, not one string")
        base = (settings or Settings.from_env()).trusted_types
        model = _load_skops(blob, root, (*base, *(trusted_types or ())))
    return ModelPackage(
        model=model, signature=read_signature(root), metadata=MappingProxyType(meta), path=root
    )


def read_signature(root: Path) -> Signature | None:
    """The signature of the package folder ``root`` (None when it has none), without loading
    the model; ``ArtifactCorrupted`` when the file is unreadable."""
    if not (root / SIGNATURE_FILE).exists():
        return None
    raw = _read_json(root / SIGNATURE_FILE, "signature")
    try:
        return Signature.from_dict(raw)
    except InvalidInput as e:
        raise ArtifactCorrupted(f"{root / SIGNATURE_FILE}: {e}") from e


def _read_json(file: Path, what: str) -> Any:
    try:
        return json.loads(file.read_bytes())
    except FileNotFoundError:
        raise ArtifactCorrupted(f"the package has no {file.name}") from None
    except ValueError as e:
        raise ArtifactCorrupted(f"{file} is not valid JSON ({what}): {e}") from e


def _unpickle(blob: bytes, root: Path) -> Any:
    import pickle

    try:
        return pickle.loads(blob)  # the caller opted in and the digest matched
    except Exception as e:  # any failure: a damaged or incompatible file
        raise ArtifactCorrupted(f"cannot unpickle the model in {root}: {e}") from e


def _load_skops(blob: bytes, root: Path, trusted_types: Sequence[str]) -> Any:
    """Load a skops file whose types are all skops defaults, ``trusted_types`` (the caller's
    configuration, explicitly trusted) or :data:`MODEL_LOCAL_TRUSTED_TYPES`."""
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    from modelloop.models._guard import check_tree_models

    try:
        found = skops.io.get_untrusted_types(data=blob)
    except Exception as e:  # not a zip, no schema, unknown protocol ...
        raise ArtifactCorrupted(f"cannot read the skops file in {root}: {e}") from e
    allowed = frozenset((*trusted_types, *MODEL_LOCAL_TRUSTED_TYPES))
    refused = sorted(t for t in found if t not in allowed)
    if refused:
        raise UnsafeArtifact(
            f"{root / MODEL_FILES['skops']} contains types modelloop does not trust: "
            f"{', '.join(refused)}. If you trust them, add them to MODELLOOP_TRUSTED_TYPES or "
            "pass trusted_types=[...]"
        )
    try:
        model = skops.io.loads(blob, trusted=sorted(found))  # exactly the allowed types found
    except UntrustedTypesFoundException as e:  # a type hidden from get_untrusted_types
        raise UnsafeArtifact(f"skops refused {root}: {e}") from e
    except Exception as e:
        raise ArtifactCorrupted(f"cannot load the skops file in {root}: {e}") from e
    check_tree_models(model, explicitly_trusted=set(trusted_types))
    return model
