"""A HistGradientBoosting model's tree form: its trees as plain arrays, predicted with NumPy.

Serving a scikit-learn model means importing scikit-learn, SciPy and skops before the first
prediction: more than a second of a server's start, for a model whose prediction is a walk down
a few hundred small trees. When a package's model is a ``HistGradientBoostingClassifier`` or
``HistGradientBoostingRegressor``, alone on numeric columns or after a ``ColumnTransformer``
that passes numeric columns through and ordinal-encodes text columns (the quickstart's shape),
:func:`build_tree_form` writes the fitted trees beside the model file as arrays (``trees.npz``,
read without pickle) and the input's encoding as JSON (``trees.json``): each text column's
categories mapped straight to the codes the trees split on, with the codes of an unseen and of
a missing value.

The form is checked when the package is saved, before it is written: on the rows given (the
training data's, else the input example's), and on them again with every text column unseen and
with each column missing in turn, its class probabilities (or regression values) must equal the
model's own bit for bit, and it must refuse exactly the rows the model refuses. A form that does
not is not written, and the package is served with scikit-learn as before.

:class:`TreeForm` predicts as scikit-learn does: every tree's leaf value summed in tree order
from the baseline, in float64, then the loss's inverse link (SciPy's ``expit`` for a binary
classifier, scikit-learn's softmax steps for more classes). Loading it never imports
scikit-learn; every index in the arrays is checked first, so a damaged or hand-made file is
refused (``ArtifactCorrupted``) instead of read out of bounds, and every walk ends.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelloop.exceptions import ArtifactCorrupted
from modelloop.serving._direct import PLAIN_NUMERIC

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd

    from modelloop.models._signature import Signature

__all__ = ["TREES_FILE", "TREES_META_FILE", "BuiltForm", "TreeForm", "build_tree_form"]

TREES_FILE = "trees.npz"
TREES_META_FILE = "trees.json"
_FORMAT = 1
#: rows of the saved data the form is checked on (a reproducible sample of them)
CHECK_ROWS = 256
#: the inverse link of each loss scikit-learn's HistGradientBoosting estimators fit
_LINKS = {
    "HalfBinomialLoss": "logit",
    "HalfMultinomialLoss": "softmax",
    "HalfSquaredError": "identity",
    "AbsoluteError": "identity",
    "PinballLoss": "identity",
    "HalfPoissonLoss": "log",
    "HalfGammaLoss": "log",
}
#: a batch at least this large is split between threads (NumPy's indexing releases the GIL)
_SPLIT_ROWS = 2048
#: (row, tree) pairs walked at once: a larger batch is walked in pieces
_PAIRS = 1 << 20
#: nodes a form may have: 8 times a 1,000-iteration, 10-class model of 255 leaves a tree
_MAX_NODES = 40_000_000
_UNSEEN = "\x00unseen"
_ARRAYS = (
    "value",
    "feature",
    "threshold",
    "missing_left",
    "left",
    "right",
    "is_leaf",
    "is_categorical",
    "bitset",
    "roots",
    "left_bitsets",
    "known_bitsets",
    "feature_map",
    "baseline",
)


@dataclass(frozen=True)
class _Column:
    """One column of the matrix the trees split on, filled from one signature column."""

    name: str
    numeric: str | None = None  # a numeric column: its signature dtype
    codes: Mapping[str, float] | None = None  # a text column: each category's code
    unknown: float | None = None  # the code of an unseen text; None: the model refuses it
    missing: float | None = None  # the code of a missing text; None: the model refuses it

    def to_json(self) -> dict[str, Any]:
        if self.numeric is not None:
            return {"name": self.name, "numeric": self.numeric}
        return {
            "name": self.name,
            "codes": dict(self.codes or {}),
            "unknown": self.unknown,
            "missing": self.missing,
        }


class TreeForm:
    """A HistGradientBoosting model's trees and input encoding, predicted with NumPy alone.

    ``predict(columns)`` takes decoded columns (lists of Python values, ``None`` for missing, as
    the server's decoder gives them) and returns ``(labels, probabilities)`` for a classifier,
    ``(values, None)`` for a regressor. Safe to call from several threads at once.
    """

    def __init__(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        where = "the tree form"
        try:
            self._columns = [_column(c) for c in meta["columns"]]
            self.link: str = meta["link"]
            self._per_iteration = int(meta["trees_per_iteration"])
            classes = meta.get("classes")
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactCorrupted(f"{where} has an unreadable description: {e}") from e
        if self.link not in set(_LINKS.values()):
            raise ArtifactCorrupted(f"{where} names an unknown link {self.link!r}")
        self.classes = None if classes is None else np.asarray(classes)
        n_classes = None if self.classes is None else len(self.classes)
        expected = {"logit": (2, 1), "identity": (None, 1), "log": (None, 1)}.get(
            self.link, (n_classes, n_classes)
        )
        if (
            not self._columns
            or (n_classes, self._per_iteration) != expected
            or (self.link == "softmax" and (n_classes or 0) < 3)
        ):
            raise ArtifactCorrupted(
                f"{where} is inconsistent: link {self.link}, {n_classes} classes, "
                f"{self._per_iteration} trees per iteration, {len(self._columns)} columns"
            )
        #: per text column: category (and None, for a missing value) -> code
        self._lookups: list[dict[str | None, float | None]] = []
        for c in self._columns:
            lookup: dict[str | None, float | None] = {None: c.missing}
            lookup.update(c.codes or {})
            self._lookups.append(lookup)
        self.check_rows = int(meta.get("check_rows", 0))
        self._prepare(arrays)

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def load(cls, folder: Path) -> TreeForm | None:
        """The tree form of the package folder ``folder``, or None when it has none.

        ``ArtifactCorrupted`` when its files do not match the digest ``metadata.json`` records,
        or hold arrays that do not make a valid forest.
        """
        meta_file, trees_file = folder / TREES_META_FILE, folder / TREES_FILE
        if not meta_file.is_file():
            return None
        try:
            package_meta = json.loads((folder / "metadata.json").read_bytes())
            recorded = package_meta["tree_form"]["sha256"]
            described = meta_file.read_bytes()
            meta = json.loads(described)
            blob = trees_file.read_bytes()
        except FileNotFoundError as e:
            missing = Path(e.filename or "").name
            raise ArtifactCorrupted(f"the tree form in {folder} lacks {missing}") from None
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise ArtifactCorrupted(f"the tree form in {folder} is not recorded: {e}") from e
        digest = hashlib.sha256(blob + b"\0" + described).hexdigest()
        if digest != recorded:
            raise ArtifactCorrupted(
                f"the tree form in {folder} has sha256 {digest}, metadata records {recorded!r}: "
                "its files were altered or truncated"
            )
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ArtifactCorrupted(f"the tree form in {folder} has an unknown format")
        arrays = _read_arrays(blob, f"the tree form in {folder}")
        if "classes" in arrays:
            meta = {**meta, "classes": arrays.pop("classes").tolist()}
        return cls(meta, arrays)

    def check_signature(self, signature: Signature) -> None:
        """``ArtifactCorrupted`` unless the form's columns are the signature's (numeric ones of
        the same dtype, text ones text) and its classes the signature's."""
        specs = {spec.name: spec for spec in signature.inputs}
        for col in self._columns:
            spec = specs.get(col.name)
            if spec is None:
                raise ArtifactCorrupted(
                    f"the tree form reads a column {col.name!r} the model lacks"
                )
            if col.numeric is not None and spec.dtype != col.numeric:
                raise ArtifactCorrupted(
                    f"the tree form reads {col.name!r} as {col.numeric}, the signature says "
                    f"{spec.dtype}"
                )
            if col.numeric is None and spec.dtype not in ("string", "category"):
                raise ArtifactCorrupted(f"the tree form reads {col.name!r} as text")
        if signature.classes is not None and (
            self.classes is None or self.classes.tolist() != list(signature.classes)
        ):
            raise ArtifactCorrupted("the tree form's classes are not the signature's")

    def _prepare(self, a: Mapping[str, np.ndarray]) -> None:
        """Check the arrays and lay them out for walking every tree at once."""

        def bad(why: str) -> ArtifactCorrupted:
            return ArtifactCorrupted(f"the tree form's arrays are not a valid forest: {why}")

        try:
            value = np.asarray(a["value"], dtype=np.float64)
            n = value.shape[0]
            feature = np.asarray(a["feature"], dtype=np.int64)
            threshold = np.asarray(a["threshold"], dtype=np.float64)
            left = np.asarray(a["left"], dtype=np.int64)
            right = np.asarray(a["right"], dtype=np.int64)
            missing_left = np.asarray(a["missing_left"]).astype(bool)
            is_leaf = np.asarray(a["is_leaf"]).astype(bool)
            is_cat = np.asarray(a["is_categorical"]).astype(bool)
            bitset = np.asarray(a["bitset"], dtype=np.int64)
            roots = np.asarray(a["roots"], dtype=np.int64)
            left_bits = np.asarray(a["left_bitsets"], dtype=np.uint32)
            known_bits = np.asarray(a["known_bitsets"], dtype=np.uint32)
            feature_map = np.asarray(a["feature_map"], dtype=np.int64)
            baseline = np.asarray(a["baseline"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise bad(str(e)) from e
        n_features = len(self._columns)
        if n > _MAX_NODES:
            raise bad(f"it has {n:,} nodes, more than {_MAX_NODES:,}")
        per_node = (feature, threshold, left, right, missing_left, is_leaf, is_cat, bitset)
        if value.ndim != 1 or any(x.shape != (n,) for x in per_node):
            raise bad("the node arrays differ in length")
        if roots.ndim != 1 or not len(roots) or roots[0] != 0 or np.any(np.diff(roots) <= 0):
            raise bad("the trees' first nodes are not in order")
        if roots[-1] >= n or len(roots) % self._per_iteration:
            raise bad("the trees do not fill the nodes, or are not whole iterations")
        if baseline.shape != (self._per_iteration,):
            raise bad("the baseline has the wrong length")
        if left_bits.ndim != 2 or left_bits.shape[1:] != (8,) or known_bits.shape[1:] != (8,):
            raise bad("a bitset is not 8 words")
        if feature_map.shape != (n_features,):
            raise bad("the feature map does not match the columns")
        ends = np.append(roots[1:], n)
        end = np.repeat(ends, np.diff(np.append(roots, n)))  # each node's tree end
        inner = ~is_leaf
        index = np.arange(n)
        # children come after their node, inside its tree: every walk ends within its tree
        for child in (left, right):
            if np.any(inner & ((child <= index) | (child >= end))):
                raise bad("a child does not follow its node inside its tree")
        if np.any(inner & ((feature < 0) | (feature >= n_features))):
            raise bad("a split names a column the input does not have")
        numeric_split = inner & ~is_cat
        if np.any(numeric_split & (np.isnan(threshold) | (threshold == -np.inf))):
            raise bad("a numeric split has no threshold")  # +inf: it splits off missing values
        cat_split = inner & is_cat
        if np.any(cat_split & ((bitset < 0) | (bitset >= len(left_bits)))):
            raise bad("a categorical split names a bitset that does not exist")
        known_at = feature_map[np.where(cat_split, feature, 0)]
        if np.any(cat_split & ((known_at < 0) | (known_at >= len(known_bits)))):
            raise bad("a categorical split's column has no known categories")
        if not np.all(np.isfinite(value[is_leaf])):
            raise bad("a leaf value is not finite")
        # walking layout: a leaf loops to itself; a missing value is -inf where it goes left,
        # NaN where it goes right (so one comparison decides every numeric split, a threshold
        # of +inf included: it sends every number left, a missing value where it goes)
        leaf_index = np.flatnonzero(is_leaf)
        left, right = left.copy(), right.copy()
        left[leaf_index] = right[leaf_index] = leaf_index
        self._child = np.stack([right, left], axis=1).ravel()  # [2 * node + goes_left]
        self._column = np.where(is_leaf, 0, feature + np.where(missing_left, 0, n_features))
        self._threshold = np.where(is_leaf, np.inf, threshold)
        self._leaf = is_leaf
        self._value = value
        self._roots = roots
        self._n_features = n_features
        # a categorical split as a table: goes left for code 0..255, and [256] for a missing,
        # negative or unknown code (scikit-learn's rules: left bitset, else known -> right,
        # else where missing values go)
        cat_nodes = np.flatnonzero(cat_split)
        self._is_cat = cat_split
        self._table_at = np.zeros(n, dtype=np.intp)
        self._table_at[cat_nodes] = np.arange(len(cat_nodes)) * 257
        codes = np.arange(256)
        word, bit = codes >> 5, (codes & 31).astype(np.uint32)
        table = np.empty((len(cat_nodes), 257), dtype=bool)
        for i in range(0, len(cat_nodes), 4096):  # a few MB at a time
            some = cat_nodes[i : i + 4096]
            goes_left = (left_bits[bitset[some]][:, word] >> bit) & 1
            known = (known_bits[feature_map[feature[some]]][:, word] >> bit) & 1
            unknown_way = missing_left[some, None]
            table[i : i + 4096, :256] = np.where(
                goes_left == 1, True, np.where(known == 1, False, unknown_way)
            )
            table[i : i + 4096, 256] = missing_left[some]
        self._table = table.ravel()
        self._baseline = baseline

    # -- predicting ---------------------------------------------------------------------------

    @property
    def has_proba(self) -> bool:
        """Whether the model gives class probabilities (a classifier)."""
        return self.classes is not None

    @property
    def n_trees(self) -> int:
        return len(self._roots)

    def matrix(self, columns: Mapping[str, list[Any]]) -> np.ndarray:
        """The float64 matrix the trees split on, from decoded ``columns``; ``ValueError``
        naming the column for a value the model refuses (an unseen or missing text where its
        encoder raises, a missing integer)."""
        n = len(columns[self._columns[0].name])
        out = np.empty((n, len(self._columns)), dtype=np.float64)
        for j, col in enumerate(self._columns):
            values = columns[col.name]
            if col.numeric is not None:
                if col.numeric in ("float32", "float64"):
                    values = [math.nan if v is None else v for v in values]
                elif None in values:
                    raise ValueError(f"column {col.name!r} has a missing value")
                out[:, j] = np.array(values, dtype=col.numeric)
                continue
            lookup, unknown = self._lookups[j], col.unknown
            filled = [lookup.get(v, unknown) for v in values]  # None: the missing value's code
            if None in filled:  # a value this column's encoder refuses
                what = (
                    "a missing value" if col.missing is None and None in values else "an unseen one"
                )
                raise ValueError(f"column {col.name!r} has {what}, which the model refuses")
            out[:, j] = filled
        return out

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The summed leaf values, ``[rows, trees per iteration]``, as scikit-learn's
        ``_raw_predict`` gives them: the baseline, then each tree's leaf added in order."""
        n = X.shape[0]
        if n >= _SPLIT_ROWS and _CPUS > 1:  # half on a second thread
            half = n // 2
            other = _helper().submit(self._raw_chunks, X[half:])
            first = self._raw_chunks(X[:half])
            return np.concatenate([first, other.result()])
        return self._raw_chunks(X)

    def _raw_chunks(self, X: np.ndarray) -> np.ndarray:
        """:meth:`_raw` over at most :data:`_PAIRS` (row, tree) pairs at a time, so that its
        memory stays bounded (about 50 bytes a pair)."""
        rows = max(1, _PAIRS // len(self._roots))
        if X.shape[0] <= rows:
            return self._raw(X)
        return np.concatenate([self._raw(X[i : i + rows]) for i in range(0, X.shape[0], rows)])

    def _raw(self, X: np.ndarray) -> np.ndarray:
        n, trees = X.shape[0], len(self._roots)
        missing = np.isnan(X)
        both = np.concatenate([np.where(missing, -np.inf, X), X], axis=1)
        codes = np.where((both >= 0) & (both <= 255), both, 256).astype(np.intp).ravel()
        both = both.ravel()
        node = np.tile(self._roots, n)
        row_at = np.repeat(np.arange(n, dtype=np.intp) * (2 * self._n_features), trees)
        slot = np.arange(n * trees, dtype=np.intp)
        leaf_values = np.empty(n * trees, dtype=np.float64)
        while len(node):
            at = row_at + self._column[node]
            left = both[at] <= self._threshold[node]
            cat = np.flatnonzero(self._is_cat[node])
            if len(cat):
                left[cat] = self._table[self._table_at[node[cat]] + codes[at[cat]]]
            node = self._child[(node << 1) | left]
            at_leaf = self._leaf[node]
            finished = np.count_nonzero(at_leaf)
            # set aside the pairs at a leaf once they are many (a leaf loops to itself)
            if finished and (finished == len(node) or 5 * finished >= 2 * len(node)):
                done = np.flatnonzero(at_leaf)
                leaf_values[slot[done]] = self._value[node[done]]
                keep = np.flatnonzero(~at_leaf)
                node, slot, row_at = node[keep], slot[keep], row_at[keep]
        k = self._per_iteration
        per_tree = leaf_values.reshape(n, trees // k, k)
        out = np.empty((n, k), dtype=np.float64)
        for j in range(k):  # baseline + tree 1 + tree 2 ..., each sum rounded in that order
            sums = np.concatenate([np.full((n, 1), self._baseline[j]), per_tree[:, :, j]], axis=1)
            out[:, j] = np.cumsum(sums, axis=1)[:, -1]
        return out

    def predict(self, columns: Mapping[str, list[Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(labels, probabilities)`` of a classifier (labels as its ``predict`` gives them),
        ``(values, None)`` of a regressor."""
        return self.predict_matrix(self.matrix(columns))

    def predict_matrix(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict` from the matrix :meth:`matrix` gives."""
        raw = np.asfortranarray(self.raw(X))  # scikit-learn's layout: its sums' order too
        if self.link == "identity":
            return raw[:, 0], None
        if self.link == "log":
            return np.exp(raw[:, 0]), None
        assert self.classes is not None
        if self.link == "logit":
            from scipy.special import expit  # what scikit-learn's logit link calls

            proba = np.empty((raw.shape[0], 2), dtype=np.float64)
            proba[:, 1] = expit(raw[:, 0])
            proba[:, 0] = 1 - proba[:, 1]
        else:  # scikit-learn's softmax, step for step
            proba = raw - raw.max(axis=1).reshape(-1, 1)
            np.exp(proba, out=proba)
            proba /= proba.sum(axis=1).reshape(-1, 1)
        # labels as scikit-learn's predict takes them: from the raw scores
        chosen = (raw[:, 0] > 0).astype(int) if self.link == "logit" else np.argmax(raw, axis=1)
        return self.classes[chosen], proba


def _read_arrays(blob: bytes, where: str) -> dict[str, np.ndarray]:
    """The arrays of a ``trees.npz`` as :func:`numpy.savez` writes it: stored entries, never
    compressed, holding no objects and no more data than the file itself (so a small file
    cannot claim a huge array); ``ArtifactCorrupted`` otherwise."""
    import zipfile

    from numpy.lib import format as npy

    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            entries = {info.filename: info for info in archive.infolist()}
            if sum(info.file_size for info in entries.values()) > len(blob):
                raise ValueError("its entries hold more than the file")
            for name in (*_ARRAYS, "classes"):
                info = entries.get(f"{name}.npy")
                if info is None:
                    if name == "classes":
                        continue
                    raise ValueError(f"it has no array {name!r}")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"{name} is compressed")
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    if version == (1, 0):
                        shape, _fortran, dtype = npy.read_array_header_1_0(member)
                    else:
                        shape, _fortran, dtype = npy.read_array_header_2_0(member)
                    if dtype.hasobject or math.prod(shape) * dtype.itemsize > info.file_size:
                        raise ValueError(f"{name} holds objects or more than its entry")
                with archive.open(info) as member:
                    out[name] = npy.read_array(member, allow_pickle=False)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ArtifactCorrupted(f"{where} is unreadable: {e}") from e
    return out


_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _helper() -> ThreadPoolExecutor:
    """The one thread every form shares for the second half of a large batch."""
    from concurrent.futures import ThreadPoolExecutor

    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="modelloop-trees")
        return _pool


def _column(raw: Mapping[str, Any]) -> _Column:
    name = str(raw["name"])
    if raw.get("numeric") is not None:
        if raw["numeric"] not in PLAIN_NUMERIC:
            raise ValueError(f"column {name!r} has dtype {raw['numeric']!r}")
        return _Column(name, numeric=raw["numeric"])
    codes = {str(k): _code(v) for k, v in dict(raw["codes"]).items()}
    unknown, missing = raw.get("unknown"), raw.get("missing")
    return _Column(
        name,
        codes=codes,
        unknown=None if unknown is None else _code(unknown),
        missing=None if missing is None else _code(missing),
    )


def _code(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{v!r} is not a number")
    return float(v)


# -- building (scikit-learn is loaded: the model is in hand) -----------------------------------


@dataclass(frozen=True)
class BuiltForm:
    """A checked tree form: its files, their digest (``metadata.json`` records it) and the
    number of rows it was checked on."""

    files: dict[str, bytes]
    sha256: str
    check_rows: int


def build_tree_form(
    model: Any, signature: Signature | None, data: pd.DataFrame | None
) -> BuiltForm | str | None:
    """``model``'s tree form, checked on rows of ``data`` (see the module); the reason when a
    model of its shape gets none; None for a model of another shape. Never raises."""
    if signature is None or not type(model).__module__.startswith("sklearn."):
        return None
    try:
        plan = _plan(model, signature)
        if plan is None:
            return None
        if data is None or not len(data):
            return "there are no rows to check it on"
        return _build(model, signature, data, *plan)
    except Exception as e:  # a form only makes serving faster: never fail a save for it
        return f"it could not be built ({type(e).__name__}: {e})"


def _plan(model: Any, signature: Signature) -> tuple[Any, list[_Column], Any] | None:
    """The bare HistGradientBoosting estimator, the columns that fill its input, and the
    pipeline's direct input (None: the model takes the frame itself); None for any other
    model."""
    from modelloop.serving._direct import DirectInput, OrdinalColumn, PassColumn

    direct = DirectInput.plan(model, signature)
    if direct is None:
        if not _is_hgb(model) or getattr(model, "_preprocessor", None) is not None:
            return None
        names = getattr(model, "feature_names_in_", None)
        specs = {spec.name: spec for spec in signature.inputs}
        if names is None or list(names) != signature.columns:
            return None
        if any(specs[c].dtype not in PLAIN_NUMERIC for c in names):
            return None
        return model, [_Column(c, numeric=specs[c].dtype) for c in names], None
    bare = direct.rest
    if not _is_hgb(bare) or getattr(bare, "_preprocessor", None) is not None:
        return None
    columns = []
    for part in direct.parts:
        if isinstance(part, PassColumn):
            columns.append(_Column(part.column, numeric=part.dtype))
        elif isinstance(part, OrdinalColumn):
            columns.append(_Column(part.column, codes=part.codes, unknown=part.unknown))
    return bare, columns, direct


def _is_hgb(model: Any) -> bool:
    return type(model).__module__.startswith("sklearn.ensemble._hist_gradient_boosting") and (
        type(model).__name__ in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")
    )


def _build(
    model: Any,
    signature: Signature,
    data: pd.DataFrame,
    bare: Any,
    columns: list[_Column],
    direct: Any,
) -> BuiltForm | str:
    from modelloop.serving._codec import to_frame

    link = _LINKS.get(type(bare._loss).__name__)
    link_name = type(getattr(bare._loss, "link", None)).__name__
    expected = {"logit": "LogitLink", "softmax": "MultinomialLogit", "identity": "IdentityLink"}
    if link is None or expected.get(link, "LogLink") != link_name:
        return f"its loss {type(bare._loss).__name__} is not one the form predicts"
    classifier = link in ("logit", "softmax")
    if classifier and not hasattr(model, "predict_proba"):
        return "it is a classifier without probabilities"
    rows = data[signature.columns]
    if len(rows) > CHECK_ROWS:
        rows = rows.sample(CHECK_ROWS, random_state=0)
    checked = _decoded(signature.validate(rows))
    # the code of a missing text, as the fitted stages give it (None: they refuse it)
    first = {c: v[:1] for c, v in checked.items()}
    for j, col in enumerate(columns):
        if col.codes is None:
            continue
        try:
            code = float(direct.transform(to_frame({**first, col.name: [None]}, signature))[0, j])
        except ValueError:
            continue
        columns[j] = replace(col, missing=code)
    arrays = _arrays(bare)
    meta: dict[str, Any] = {
        "format": _FORMAT,
        "link": link,
        "trees_per_iteration": int(bare.n_trees_per_iteration_),
        "columns": [c.to_json() for c in columns],
        "check_rows": len(rows),
    }
    classes = None
    if classifier:
        classes = np.asarray(bare.classes_)
        if classes.dtype == object:
            if not all(isinstance(c, str) for c in classes.tolist()):
                return "its classes are neither numbers nor text"
            classes = classes.astype(str)
        if classes.dtype.kind not in "iufbU":
            return f"its classes have dtype {classes.dtype}"
        arrays["classes"] = classes
    form = TreeForm({**meta, "classes": None if classes is None else classes.tolist()}, arrays)
    for what, variant in _variants(checked, signature):
        why = _disagreement(model, form, variant, signature, classifier)
        if why:
            return f"it disagrees with the model on the check rows {what}: {why}"
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    blob = buffer.getvalue()
    meta_blob = json.dumps(meta, indent=1, sort_keys=True).encode()
    digest = hashlib.sha256(blob + b"\0" + meta_blob).hexdigest()
    return BuiltForm({TREES_FILE: blob, TREES_META_FILE: meta_blob}, digest, len(rows))


def _arrays(bare: Any) -> dict[str, np.ndarray]:
    """The fitted trees as flat arrays: every tree's nodes one after another (children as
    indices into the whole), their categorical bitsets likewise."""
    trees = [tree for iteration in bare._predictors for tree in iteration]
    roots, bitsets, parts = [], [], []
    at = bits_at = 0
    for tree in trees:
        nodes = tree.nodes
        leaf = nodes["is_leaf"].astype(bool)
        shifted = {
            "left": np.where(leaf, 0, nodes["left"].astype(np.int64) + at),
            "right": np.where(leaf, 0, nodes["right"].astype(np.int64) + at),
            "bitset": np.where(
                nodes["is_categorical"].astype(bool) & ~leaf,
                nodes["bitset_idx"].astype(np.int64) + bits_at,
                0,
            ),
        }
        parts.append((nodes, shifted))
        roots.append(at)
        at += len(nodes)
        raw_bits = np.asarray(tree.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8)
        bitsets.append(raw_bits)
        bits_at += len(raw_bits)
    known, feature_map = bare._bin_mapper.make_known_categories_bitsets()

    def field(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate([np.asarray(n[name], dtype=dtype) for n, _ in parts])

    def moved(name: str) -> np.ndarray:
        return np.concatenate([s[name] for _, s in parts]).astype(np.int64)

    return {
        "value": field("value", np.float64),
        "feature": field("feature_idx", np.int64),
        "threshold": field("num_threshold", np.float64),
        "missing_left": field("missing_go_to_left", np.uint8),
        "left": moved("left"),
        "right": moved("right"),
        "is_leaf": field("is_leaf", np.uint8),
        "is_categorical": field("is_categorical", np.uint8),
        "bitset": moved("bitset"),
        "roots": np.asarray(roots, dtype=np.int64),
        "left_bitsets": np.concatenate(bitsets) if bitsets else np.zeros((0, 8), np.uint32),
        "known_bitsets": np.asarray(known, dtype=np.uint32).reshape(-1, 8),
        "feature_map": np.asarray(feature_map, dtype=np.int64),
        "baseline": np.asarray(bare._baseline_prediction, dtype=np.float64).ravel(),
    }


def _decoded(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A validated frame as the server's decoder gives columns: Python values, None missing."""
    return {
        c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns
    }


def _variants(
    columns: dict[str, list[Any]], signature: Signature
) -> list[tuple[str, dict[str, list[Any]]]]:
    """The check rows, the same with every text column unseen, and with each column missing."""
    n = len(next(iter(columns.values())))
    out = [("as given", columns)]
    texts = [s.name for s in signature.inputs if s.dtype in ("string", "category")]
    if texts:
        out.append(("with unseen text", {**columns, **{c: [_UNSEEN] * n for c in texts}}))
    for spec in signature.inputs:
        if spec.dtype in ("string", "category", "float32", "float64"):
            out.append((f"with {spec.name!r} missing", {**columns, spec.name: [None] * n}))
    return out


def _disagreement(
    model: Any,
    form: TreeForm,
    columns: dict[str, list[Any]],
    signature: Signature,
    classifier: bool,
) -> str:
    """Why the form's answer for ``columns`` is not the model's ("" when it is)."""
    from modelloop.serving._codec import to_frame

    try:
        frame = to_frame(columns, signature)
        theirs = [np.asarray(model.predict(frame))]
        if classifier:
            theirs.append(np.asarray(model.predict_proba(frame)))
    except ValueError:
        theirs = None
    try:
        labels, proba = form.predict(columns)
        ours = [labels] if proba is None else [labels, proba]
    except ValueError:
        ours = None
    if theirs is None or ours is None:
        if theirs is None and ours is None:
            return ""
        return "the model refuses them" if theirs is None else "the form refuses them"
    for a, b in zip(theirs, ours, strict=True):
        same = a.tolist() == b.tolist() if a.dtype.kind in "OUS" else np.array_equal(a, b)
        if a.shape != b.shape or not same:
            return "different outputs"
    return ""
