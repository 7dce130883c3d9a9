"""A card and a diff of versions registered by hand, outside a pipeline: what was stored is
shown (signature, training data, lineage), what was not is said, and nothing is made up."""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import LogisticRegression

from modelloop import Client
from modelloop.registry._card import build_card
from modelloop.registry._diff import diff_versions


def _register(client: Client, X: Any, y: Any, columns: list[str]) -> int:
    model = LogisticRegression(max_iter=5000).fit(X[columns], y)
    with client.start_run("cancer") as run:
        run.log_dataset(X[columns].assign(target=y), "cancer-train")
        run.log_model(model, "model", input_example=X[columns].head(5))
    return client.register_model(run.run_id, "cancer").version


def test_hand_registered_versions(client: Client, breast_cancer: Any) -> None:
    X, y = breast_cancer
    cols = ["mean radius", "mean texture", "worst area"]
    v1 = _register(client, X, y, cols)
    v2 = _register(client, X, y, cols[:2])
    card = build_card(client, "cancer", v1)
    d = card.to_dict()
    mv = client.get_model_version("cancer", v1)
    ds = client.store.list_run_datasets(mv.run_id)[-1].dataset
    assert d["gates"] is None and d["comparison"] is None and d["metrics"]["values"] == {}
    assert d["predicts"]["features"] == cols and d["predicts"]["target"] is None
    assert d["training_data"]["digest"] == ds.digest and d["training_data"]["rows"] == len(X)
    assert d["lineage"]["pipeline_run"] is None and d["lineage"]["train_run"] == mv.run_id
    md = card.to_markdown()
    assert "## Gates" not in md and "## Signature" in md and "| worst area | float64 |" in md
    assert "Predicts **?**" in md  # no pipeline spec: the target is not known, and says so

    diff = diff_versions(client, ("cancer", v1), ("cancer", v2))
    assert diff.metrics == () and diff.test_data == {}
    assert diff.notes == (
        "neither version has a test split recorded by a pipeline: metrics not compared",
    )
    assert [(c.column, c.change, c.breaking) for c in diff.signature] == [
        ("worst area", "removed", True)
    ]
