"""What a skops file may contain: the allow-list comes from modelloop, never from the file.

The crafted tree models below are only ever loaded, never used to predict: predicting with them is
exactly the out-of-bounds read the checks exist to prevent.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import skops.io
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

from modelloop._config import DEFAULT_TRUSTED_TYPES
from modelloop.exceptions import UnsafeArtifact
from modelloop.models import MODEL_LOCAL_TRUSTED_TYPES, load_model, save_model

TREE = "sklearn.tree._tree.Tree"
TREE_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


class AddConstant(TransformerMixin, BaseEstimator):
    """A user-defined transformer: skops can save it, but nobody has vouched for it."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = value

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) + self.value


CUSTOM = f"{AddConstant.__module__}.{AddConstant.__qualname__}"


@pytest.fixture
def custom_package(cancer, tmp_path):
    X, y = cancer
    X = X.iloc[:, :3]
    model = make_pipeline(AddConstant(2.0), LogisticRegression()).fit(X, y)
    return save_model(model, tmp_path / "custom", input_example=X.head(3)), model


def test_default_trust_covers_common_sklearn_models() -> None:
    # The tree types are trusted here only because modelloop checks them (see _guard);
    # skops 0.16 does not trust them by default.
    assert TREE in MODEL_LOCAL_TRUSTED_TYPES and TREE_PREDICTOR in MODEL_LOCAL_TRUSTED_TYPES
    assert TREE not in DEFAULT_TRUSTED_TYPES


def test_custom_class_refused_naming_it(custom_package) -> None:
    path, _ = custom_package
    assert CUSTOM in skops.io.get_untrusted_types(file=path / "model.skops")
    with pytest.raises(UnsafeArtifact) as info:
        load_model(path)
    assert CUSTOM in str(info.value)
    assert "trusted_types" in str(info.value)


def test_custom_class_accepted_when_the_caller_trusts_it(custom_package, cancer) -> None:
    path, model = custom_package
    X = cancer[0].iloc[:, :3]
    pkg = load_model(path, trusted_types=[CUSTOM])
    assert isinstance(pkg.model.steps[0][1], AddConstant)
    np.testing.assert_array_equal(pkg.predict(X), model.predict(X))


def test_custom_class_accepted_when_configuration_trusts_it(
    custom_package, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = custom_package
    monkeypatch.setenv("MODELLOOP_TRUSTED_TYPES", f"some.other.Type, {CUSTOM}")
    assert isinstance(load_model(path).model.steps[0][1], AddConstant)


def test_untrusted_function_refused_naming_it(tmp_path) -> None:
    model = make_pipeline(FunctionTransformer(func=os.getenv), LogisticRegression())
    path = save_model(model, tmp_path / "pkg")  # unfitted: nothing runs os.getenv
    with pytest.raises(UnsafeArtifact, match=r"os\.getenv"):
        load_model(path)


def test_trusting_one_type_does_not_trust_others(custom_package) -> None:
    path, _ = custom_package
    with pytest.raises(UnsafeArtifact, match=re.escape(CUSTOM)):
        load_model(path, trusted_types=["os.getenv"])


# -- crafted tree structures -------------------------------------------------------------------


def _rebuild(tree, mutate):
    """A copy of ``tree`` whose node array was changed by ``mutate(nodes, state)``."""
    cls, args, state = tree.__reduce__()
    state = dict(state)
    state["nodes"] = state["nodes"].copy()
    mutate(state["nodes"], state)
    new = cls(*args)
    new.__setstate__(state)
    return new


def _first_internal_child(nodes) -> int:
    child = int(nodes["left_child"][0])
    assert nodes["left_child"][child] != -1, "test needs a tree at least two levels deep"
    return child


def _set(field, index, value):
    def mutate(nodes, state):
        i = index(nodes) if callable(index) else index
        nodes[field][i] = value(nodes) if callable(value) else value

    return mutate


def _understate_depth(nodes, state):
    state["max_depth"] = 1


OUT_OF_RANGE = "child node index is out of range or not after its parent"
TREE_ATTACKS = {
    "child beyond the node array": (_set("left_child", 0, lambda n: len(n) + 1000), OUT_OF_RANGE),
    "child pointing back to the root": (
        _set("right_child", _first_internal_child, 0),
        OUT_OF_RANGE,
    ),
    "root as its own child": (_set("left_child", 0, 0), OUT_OF_RANGE),
    "two parents sharing a child": (
        _set("right_child", 0, lambda n: int(n["left_child"][0])),
        "do not form a single tree",
    ),
    "feature beyond the input width": (_set("feature", 0, 10_000), "feature index out of range"),
    "negative feature": (_set("feature", 0, -7), "feature index out of range"),
    "leaf with a right child": (
        _set("right_child", lambda n: int(np.flatnonzero(n["left_child"] == -1)[0]), 1),
        "leaf has a right child",
    ),
    "understated max_depth": (_understate_depth, "records max_depth 1"),
}


@pytest.mark.parametrize("attack", sorted(TREE_ATTACKS))
def test_crafted_tree_refused(attack, cancer, tmp_path) -> None:
    X, y = cancer
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    mutate, reason = TREE_ATTACKS[attack]
    member = forest.estimators_[1]
    member.tree_ = _rebuild(member.tree_, mutate)
    path = save_model(forest, tmp_path / "pkg")
    with pytest.raises(UnsafeArtifact, match="refusing to load") as info:
        load_model(path)
    assert reason in str(info.value)


def test_forest_member_wider_than_the_forest_refused(cancer, tmp_path) -> None:
    X, y = cancer
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X.iloc[:, :5], y)
    forest.estimators_[0] = DecisionTreeClassifier(random_state=0).fit(X, y)  # 30 features
    with pytest.raises(UnsafeArtifact, match="expects 30 features, not 5"):
        load_model(save_model(forest, tmp_path / "pkg"))


def test_tree_width_disagreeing_with_its_estimator_refused(cancer, tmp_path) -> None:
    X, y = cancer
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)
    forest.estimators_[0].n_features_in_ = 3
    with pytest.raises(UnsafeArtifact, match="features"):
        load_model(save_model(forest, tmp_path / "pkg"))


def test_loose_tree_refused_unless_explicitly_trusted(cancer, tmp_path) -> None:
    X, y = cancer
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)
    model = LogisticRegression(max_iter=50).fit(X.iloc[:, :2], y)
    model.hidden_ = forest.estimators_[0].tree_  # a Tree outside any decision tree
    path = save_model(model, tmp_path / "pkg")
    with pytest.raises(UnsafeArtifact, match="outside a scikit-learn decision tree"):
        load_model(path)
    assert load_model(path, trusted_types=[TREE]).model.hidden_.node_count > 1


def test_gradient_boosting_output_columns_checked(cancer, tmp_path) -> None:
    X, y = cancer
    gb = GradientBoostingClassifier(n_estimators=3, random_state=0).fit(X, y)
    gb.estimators_ = np.hstack([gb.estimators_, gb.estimators_])  # writes past column 0
    with pytest.raises(UnsafeArtifact, match="trees per iteration"):
        load_model(save_model(gb, tmp_path / "a"))
    gb.n_trees_per_iteration_ = 2  # consistent claim; the init prediction still has 1 column
    with pytest.raises(UnsafeArtifact, match="initial prediction"):
        load_model(save_model(gb, tmp_path / "b"))


def _first_internal(nodes) -> int:
    return int(np.flatnonzero(nodes["is_leaf"] == 0)[0])


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("feature_idx", 10_000, "feature index"),
        ("left", 1_000_000, "child node index"),
        ("right", 0, "child node index"),
    ],
)
def test_crafted_hist_gradient_boosting_refused(field, value, match, wine, tmp_path) -> None:
    X, y = wine
    hgb = HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(X, y)
    predictor = hgb._predictors[1][0]
    nodes = predictor.nodes.copy()
    nodes[field][_first_internal(nodes)] = value
    predictor.nodes = nodes
    with pytest.raises(UnsafeArtifact, match=match):
        load_model(save_model(hgb, tmp_path / "pkg"))


def test_crafted_categorical_bitset_index_refused(mixed, tmp_path) -> None:
    X, y = mixed
    features = X[["color", "income"]]
    hgb = HistGradientBoostingClassifier(
        max_iter=5, categorical_features="from_dtype", random_state=0
    ).fit(features, y)
    assert load_model(save_model(hgb, tmp_path / "ok")).model is not None
    for iteration in hgb._predictors:
        nodes = iteration[0].nodes
        categorical = np.flatnonzero((nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 1))
        if categorical.size:
            nodes = nodes.copy()
            nodes["bitset_idx"][categorical[0]] = 500
            iteration[0].nodes = nodes
            break
    else:
        pytest.fail("no categorical split to tamper with")
    with pytest.raises(UnsafeArtifact, match="categorical split"):
        load_model(save_model(hgb, tmp_path / "pkg"))


def test_hist_gradient_boosting_marked_in_fit_refused(wine, tmp_path) -> None:
    X, y = wine
    hgb = HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(X, y)
    hgb._in_fit = True  # predict would then walk raw input as if it were binned
    with pytest.raises(UnsafeArtifact, match="being fitted"):
        load_model(save_model(hgb, tmp_path / "pkg"))
