"""Checks that make scikit-learn's tree models safe to trust when loaded from a file.

skops can check that an object is of a trusted type, not that its content is sound. Two types hold
node arrays that scikit-learn's compiled code follows without bounds checks:
``sklearn.tree._tree.Tree`` (decision trees, random forests, gradient boosting) and
``TreePredictor`` (histogram gradient boosting). A crafted file can set a child or feature index
out of range, and ``predict`` then reads outside its arrays or crashes the process, so skops does
not trust these types by default.

modelloop trusts them because it checks, on every load, what scikit-learn's own code assumes:
each node array forms a tree rooted at node 0 whose children come after their parent (so every
walk ends), every index lies inside its array, the recorded depth bounds the real one, and every
feature index is below the input width that the owning estimator validates before walking it.
Every tree that scikit-learn builds passes. A tree structure outside the estimators that own one
(a decision tree, forest, gradient boosting or isolation forest) is refused unless the user named
its type in ``trusted_types`` themselves.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Collection, Iterator
from typing import Any

import numpy as np

from modelloop.exceptions import UnsafeArtifact

__all__ = ["GUARDED_TYPES", "TREE", "TREE_PREDICTOR", "check_tree_models"]

TREE = "sklearn.tree._tree.Tree"
TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
GUARDED_TYPES: tuple[str, ...] = (TREE, TREE_PREDICTOR)

_DENSE_PROBE_LIMIT = 1 << 20  # widest all-zero row built to probe an init estimator


class _Refused(Exception):
    pass


def _fail(where: str, why: str) -> _Refused:
    return _Refused(f"{where}: {why}")


def check_tree_models(model: Any, *, explicitly_trusted: Collection[str] = ()) -> None:
    """Raise ``UnsafeArtifact`` if a tree structure reachable from ``model`` is unsound.

    ``explicitly_trusted`` are type names the user trusts by configuration; a Tree or
    TreePredictor outside the estimators that own one is then accepted unchecked.
    """
    try:
        _check(model, frozenset(explicitly_trusted))
    except _Refused as e:
        raise UnsafeArtifact(
            f"refusing to load the model: {e}. Files written by scikit-learn never look like this; "
            "the file was crafted or damaged"
        ) from None


def _walk(root: Any) -> Iterator[Any]:
    """Every object reachable from ``root`` through containers, attributes and partials."""
    seen: set[int] = set()
    keep: list[Any] = []  # holds visited objects so their ids stay unique during the walk
    stack = [root]
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, str | bytes | int | float | complex) or id(obj) in seen:
            continue
        seen.add(id(obj))
        keep.append(obj)
        yield obj
        if isinstance(obj, np.ndarray):
            if obj.dtype == object:
                stack.extend(obj.ravel())
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif isinstance(obj, functools.partial):
            stack.extend((obj.func, *obj.args, *obj.keywords.values()))
        elif isinstance(obj, slice):
            stack.extend((obj.start, obj.stop, obj.step))
        else:
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.extend(attrs.values())


def _check(model: Any, explicit: frozenset[str]) -> None:
    from sklearn.ensemble import IsolationForest
    from sklearn.ensemble._forest import BaseForest
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import (
        BaseHistGradientBoosting,
    )
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree import BaseDecisionTree
    from sklearn.tree._tree import Tree

    objects = list(_walk(model))
    vouched: set[int] = set()
    boosters = []
    for obj in objects:
        where = type(obj).__name__
        # Unfitted estimators (templates, constructor parameters) own no tree to check.
        if isinstance(obj, BaseDecisionTree) and "tree_" in vars(obj):
            vouched.add(_check_decision_tree(obj, Tree, where))
        elif isinstance(obj, BaseForest) and "estimators_" in vars(obj):
            _check_members(obj.estimators_, _int(obj, "n_features_in_"), where, BaseDecisionTree)
        elif isinstance(obj, BaseGradientBoosting) and "estimators_" in vars(obj):
            _check_gradient_boosting(obj, where, BaseDecisionTree)
            boosters.append(obj)
        elif isinstance(obj, IsolationForest) and "estimators_" in vars(obj):
            _check_isolation_forest(obj, where, BaseDecisionTree)
        elif isinstance(obj, BaseHistGradientBoosting) and "_predictors" in vars(obj):
            vouched.update(_check_hist_gradient_boosting(obj, where, TreePredictor))
    for obj in objects:
        if isinstance(obj, Tree) and id(obj) not in vouched and TREE not in explicit:
            raise _fail("Tree", "a tree structure outside a scikit-learn decision tree")
        if (
            isinstance(obj, TreePredictor)
            and id(obj) not in vouched
            and TREE_PREDICTOR not in explicit
        ):
            raise _fail("TreePredictor", "a tree predictor outside a HistGradientBoosting model")
    for (
        booster
    ) in boosters:  # last: probing runs model code, which is safe only once all is checked
        _probe_gradient_boosting(booster, type(booster).__name__)


def _int(obj: Any, attr: str) -> int:
    value = getattr(obj, attr, None)
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
        raise _fail(type(obj).__name__, f"{attr} is {value!r}, not a count")
    return int(value)


# -- node arrays -------------------------------------------------------------------------------


def _check_links(left: np.ndarray, right: np.ndarray, internal: np.ndarray, where: str) -> int:
    """Check that the children of internal nodes form a tree rooted at 0; return its depth."""
    n = len(left)
    parents = np.flatnonzero(internal)
    lc = left[internal].astype(np.int64)
    rc = right[internal].astype(np.int64)
    if parents.size and (
        (lc <= parents).any() or (rc <= parents).any() or (lc >= n).any() or (rc >= n).any()
    ):
        raise _fail(where, "a child node index is out of range or not after its parent")
    if not np.array_equal(np.sort(np.concatenate([lc, rc])), np.arange(1, n)):
        raise _fail(where, "the nodes do not form a single tree")
    depth, level = 0, np.zeros(1, dtype=np.int64)
    while True:  # ends: a proper tree has at most n levels
        inner = level[internal[level]]
        if inner.size == 0:
            return depth
        level = np.concatenate([left[inner], right[inner]]).astype(np.int64)
        depth += 1


def _check_tree(tree: Any, n_features: int, where: str) -> None:
    n, capacity = int(tree.node_count), int(tree.capacity)
    if not 1 <= n <= capacity:  # node arrays are read up to node_count
        raise _fail(where, f"node_count {n} is outside 1..{capacity}")
    if int(tree.n_features) != n_features:
        raise _fail(where, f"the tree has {tree.n_features} features, its estimator {n_features}")
    left = np.asarray(tree.children_left)
    right = np.asarray(tree.children_right)
    internal = left != -1  # scikit-learn's leaf marker; it walks until it meets one
    if (right[~internal] != -1).any():
        raise _fail(where, "a leaf has a right child")
    feature = np.asarray(tree.feature)[internal]
    if ((feature < 0) | (feature >= n_features)).any():
        raise _fail(where, "a split uses a feature index out of range")
    depth = _check_links(left, right, internal, where)
    if depth > int(tree.max_depth):  # decision_path sizes its buffer from max_depth
        raise _fail(where, f"the tree is {depth} deep but records max_depth {tree.max_depth}")


def _check_predictor(pred: Any, width: int, is_categorical: np.ndarray, where: str) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = getattr(pred, "nodes", None)
    if (
        not isinstance(nodes, np.ndarray)
        or nodes.dtype != PREDICTOR_RECORD_DTYPE
        or nodes.ndim != 1
        or nodes.size == 0
    ):
        raise _fail(where, "the node array has the wrong type, shape or dtype")
    internal = nodes["is_leaf"] == 0
    _check_links(nodes["left"], nodes["right"], internal, where)
    if (nodes["feature_idx"][internal] >= width).any():
        raise _fail(where, f"a split uses a feature index beyond the {width} input columns")
    categorical = internal & (nodes["is_categorical"] != 0)
    for attr in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
        bits = getattr(pred, attr, None)
        if (
            not isinstance(bits, np.ndarray)
            or bits.dtype != np.uint32
            or bits.ndim != 2
            or bits.shape[1] != 8  # one bit per possible uint8 category code
        ):
            raise _fail(where, f"{attr} has the wrong type, shape or dtype")
        if (nodes["bitset_idx"][categorical] >= bits.shape[0]).any():
            raise _fail(where, f"a categorical split points outside {attr}")
    cat_features = nodes["feature_idx"][categorical]
    if cat_features.size and (
        (cat_features >= is_categorical.size).any() or not is_categorical[cat_features].all()
    ):
        raise _fail(where, "a categorical split uses a feature that is not categorical")


# -- estimators that own tree structures -------------------------------------------------------


def _check_decision_tree(est: Any, tree_type: type, where: str) -> int:
    tree = est.tree_
    if not isinstance(tree, tree_type):
        raise _fail(where, "tree_ is not a scikit-learn Tree")
    _check_tree(tree, _int(est, "n_features_in_"), where)
    return id(tree)


def _check_members(members: Any, width: int, where: str, tree_cls: type) -> None:
    """Members are walked with unchecked input, so each must expect the ensemble's width."""
    if not isinstance(members, list | np.ndarray):
        raise _fail(where, "estimators_ is not a list of trees")
    for member in np.asarray(members, dtype=object).ravel():
        if not isinstance(member, tree_cls):
            raise _fail(where, f"a member is a {type(member).__name__}, not a decision tree")
        expects = _int(member, "n_features_in_")
        if expects != width:
            raise _fail(where, f"a member expects {expects} features, not {width}")


def _check_gradient_boosting(gb: Any, where: str, tree_cls: type) -> None:
    members = gb.estimators_
    if not isinstance(members, np.ndarray) or members.ndim != 2 or members.dtype != object:
        raise _fail(where, "estimators_ is not a 2-d array of trees")
    _check_members(members, _int(gb, "n_features_in_"), where, tree_cls)
    if members.shape[1] != _int(gb, "n_trees_per_iteration_"):  # columns of the output buffer
        raise _fail(where, "estimators_ has more columns than trees per iteration")


def _probe_gradient_boosting(gb: Any, where: str) -> None:
    """The compiled predictor writes column k of the init estimator's output for tree column k."""
    width = gb.n_features_in_
    if width <= _DENSE_PROBE_LIMIT:
        row: Any = np.zeros((1, width), dtype=np.float32)
    else:
        import scipy.sparse

        row = scipy.sparse.csr_matrix((1, width), dtype=np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = gb._raw_predict_init(row)
    except Exception as e:  # any failure: the model cannot be shown sound
        raise _fail(where, f"cannot check its initial prediction ({e})") from None
    if np.shape(raw) != (1, gb.estimators_.shape[1]):
        raise _fail(where, "its initial prediction does not match its trees per iteration")


def _check_isolation_forest(forest: Any, where: str, tree_cls: type) -> None:
    width = _int(forest, "n_features_in_")
    subsample = getattr(forest, "_max_features", width) != width
    members, features = forest.estimators_, forest.estimators_features_
    if not isinstance(members, list) or not isinstance(features, list):
        raise _fail(where, "estimators_ or estimators_features_ is not a list")
    for member, cols in zip(members, features, strict=False):  # zip: as scikit-learn pairs them
        _check_members([member], len(cols) if subsample else width, where, tree_cls)


def _check_hist_gradient_boosting(hgb: Any, where: str, predictor_cls: type) -> list[int]:
    if getattr(hgb, "_in_fit", False):  # would walk binned input with other arrays
        raise _fail(where, "it is marked as being fitted")
    width = _hgb_width(hgb, where)
    is_categorical = getattr(getattr(hgb, "_bin_mapper", None), "is_categorical_", None)
    if not isinstance(is_categorical, np.ndarray) or is_categorical.ndim != 1:
        raise _fail(where, "its bin mapper has no categorical feature mask")
    predictors = getattr(hgb, "_predictors", None)
    if not isinstance(predictors, list) or not all(isinstance(it, list) for it in predictors):
        raise _fail(where, "_predictors is not a list of lists")
    ids = []
    for iteration in predictors:
        for pred in iteration:
            if not isinstance(pred, predictor_cls):
                raise _fail(where, f"a predictor is a {type(pred).__name__}")
            _check_predictor(pred, width, is_categorical.astype(bool), where)
            ids.append(id(pred))
    return ids


def _hgb_width(hgb: Any, where: str) -> int:
    """Columns the predictors see: the validated input, or what the categorical encoder emits."""
    width = _int(hgb, "n_features_in_")
    pre = getattr(hgb, "_preprocessor", None)
    if pre is None:
        return width
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder
    from sklearn.utils.validation import check_array

    if type(pre) is not ColumnTransformer:
        raise _fail(where, "its preprocessor is not the categorical ColumnTransformer")
    total = 0
    for _, step, cols in pre.transformers_:
        if isinstance(step, str):
            if step == "drop":
                continue
            if step != "passthrough":
                raise _fail(where, f"its preprocessor has an unknown step {step!r}")
        elif type(step) is FunctionTransformer:
            func = step.func
            is_check = isinstance(func, functools.partial) and func.func is check_array
            if not (func is None or (is_check and not func.args)) or step.inverse_func is not None:
                raise _fail(where, "its preprocessor runs an unexpected function")
        elif type(step) is not OrdinalEncoder:  # both keep one output column per input column
            raise _fail(where, f"its preprocessor has an unexpected step {type(step).__name__}")
        total += _selected(cols, _int(pre, "n_features_in_"), where)
    return total


def _selected(cols: Any, n_in: int, where: str) -> int:
    """How many columns a ColumnTransformer column selection picks."""
    arr = np.asarray(cols)
    if arr.ndim != 1:
        raise _fail(where, "its preprocessor selects columns in an unexpected way")
    if arr.dtype == bool:
        if arr.size != n_in:
            raise _fail(where, "its preprocessor's column mask has the wrong length")
        return int(arr.sum())
    if arr.size == 0 or arr.dtype.kind in "iuUO":
        return int(arr.size)
    raise _fail(where, "its preprocessor selects columns in an unexpected way")
