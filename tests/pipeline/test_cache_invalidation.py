"""What must invalidate the step cache, and what must not: features, edited user code, changed
SQL tables, a copied project folder, library versions; and a reused register step that finds
its alias moved (SQLite store, breast-cancer data, small models)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelloop.pipeline import Pipeline

LOGREG = """
from sklearn.linear_model import LogisticRegression


def build(C=1.0):
    return LogisticRegression(C=C, max_iter=500)
"""

TREE = """
from sklearn.tree import DecisionTreeClassifier


def build(C=1.0):
    return DecisionTreeClassifier(max_depth=3, random_state=0)
"""


@pytest.fixture
def small_spec(cancer_spec: dict[str, Any]) -> dict[str, Any]:
    """The cancer spec without explanations, with a model built by ``mymodel.py:build``."""
    spec = dict(cancer_spec)
    spec["explain"] = {"enabled": False}
    spec["model"] = {"estimator": "mymodel.py:build", "params": {"C": 1.0}}
    spec["gates"] = ["auc >= 0.5"]
    return spec


def _write_model(folder: Path, source: str) -> None:
    (folder / "mymodel.py").write_text(source, encoding="utf-8")


def _hits(result: Any) -> dict[str, bool]:
    return {s.name: s.cache_hit for s in result.steps}


def _model(client: Any, result: Any) -> Any:
    return client.load_model(
        f"runs:/{result.step('train').cached_from or result.step('train').run_id}/model"
    )


def test_changing_features_reruns_training_with_the_new_list_both_ways(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path
) -> None:
    _write_model(cancer_csv.parent, LOGREG)
    base = cancer_csv.parent
    five = Pipeline(small_spec, base_dir=base).run(client)
    two = Pipeline(small_spec, base_dir=base, overrides=["features=[mean_radius, worst_area]"])
    fewer = two.run(client)
    assert not _hits(fewer)["train"]
    assert list(_model(client, fewer).signature.columns) == ["mean_radius", "worst_area"]
    again = Pipeline(small_spec, base_dir=base).run(client)
    assert _hits(again)["train"]  # the five-feature model, from the first run
    assert again.step("train").cached_from == five.step("train").run_id
    assert len(_model(client, again).signature.columns) == 5


def test_an_edited_model_file_is_reloaded_in_a_long_running_process(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    base = cancer_csv.parent
    _write_model(base, LOGREG)
    first = Pipeline(small_spec, base_dir=base).run(client)
    assert isinstance(_model(client, first).model, LogisticRegression)
    _write_model(base, TREE)
    second = Pipeline(small_spec, base_dir=base).run(client)
    assert not _hits(second)["train"]
    assert isinstance(_model(client, second).model, DecisionTreeClassifier)
    _write_model(base, LOGREG)
    third = Pipeline(small_spec, base_dir=base).run(client)
    assert _hits(third)["train"]
    assert isinstance(_model(client, third).model, LogisticRegression)


def test_a_copied_project_folder_hits_the_cache(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path, tmp_path: Path
) -> None:
    _write_model(cancer_csv.parent, LOGREG)
    Pipeline(small_spec, base_dir=cancer_csv.parent).run(client)
    copy = tmp_path / "elsewhere" / "project"
    shutil.copytree(cancer_csv.parent, copy)
    moved = Pipeline(small_spec, base_dir=copy).run(client)
    assert all(_hits(moved).values()), _hits(moved)


def test_a_changed_sql_table_is_read_again(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path
) -> None:
    import sqlalchemy as sa

    _write_model(cancer_csv.parent, LOGREG)
    frame = pd.read_csv(cancer_csv)
    url = f"sqlite:///{cancer_csv.parent / 'cancer.db'}"
    engine = sa.create_engine(url)
    frame.to_sql("cancer", engine, index=False)
    spec = {**small_spec, "data": {"sql": "select * from cancer", "url": url}}
    spec["validation"] = {"reference": "none"}
    first = Pipeline(spec, base_dir=cancer_csv.parent).run(client)
    frame.iloc[: len(frame) // 2].to_sql("cancer", engine, index=False, if_exists="replace")
    engine.dispose()
    second = Pipeline(spec, base_dir=cancer_csv.parent).run(client)
    hits = _hits(second)
    assert not hits["load"] and not hits["split"] and not hits["train"]
    rows = client.get_run(second.step("load").run_id).tags["modelloop.rows"]
    assert int(rows) == len(frame) // 2
    assert second.step("load").output_digest != first.step("load").output_digest


def test_a_cached_register_step_puts_a_moved_alias_back_and_says_so(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path
) -> None:
    base = cancer_csv.parent
    _write_model(base, LOGREG)
    Pipeline(small_spec, base_dir=base).run(client)
    changed = {"model.params.C": 0.5}
    second = Pipeline(small_spec, base_dir=base, overrides=changed).run(client)
    assert second.registered_version == 2
    client.set_alias("cancer", "champion", 1)  # a manual rollback
    again = Pipeline(small_spec, base_dir=base, overrides=changed).run(client)
    assert _hits(again)["register"] and again.registered_version == 2
    assert client.resolve("models:/cancer@champion").version == 2
    assert any("moved it back to v2" in n for n in again.notes), again.notes
    assert "moved it back" in client.get_run(again.run_id).tags["modelloop.pipeline_notes"]


def test_dropping_a_feature_after_the_data_changed_is_not_a_missing_column(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path
) -> None:
    base = cancer_csv.parent
    _write_model(base, LOGREG)
    Pipeline(small_spec, base_dir=base).run(client)  # champion, schema of five features
    frame = pd.read_csv(cancer_csv)
    frame.iloc[:-10].to_csv(cancer_csv, index=False)  # new data
    fewer = Pipeline(
        small_spec, base_dir=base, overrides={"features": small_spec["features"][:4]}
    ).run(client)
    assert fewer.status == "registered", fewer.reason
    assert not _hits(fewer)["validate"]


def test_code_digest_covers_library_versions_and_step_modules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashlib
    import importlib.util
    from importlib import metadata

    from sklearn.linear_model import LogisticRegression

    from modelloop.pipeline import _spec
    from modelloop.pipeline._cache import module_source_digest, step_code_digest
    from modelloop.pipeline._steps import STEPS

    assert _spec._distributions_of("sklearn") == ("scikit-learn",)
    before = _spec.code_digest(LogisticRegression)
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "99.0" if d == "scikit-learn" else real(d))
    assert _spec.code_digest(LogisticRegression) != before
    # a one-file module: its file name and bytes
    source = Path(importlib.util.find_spec("modelloop.pipeline._evaluate").origin or "")
    expected = hashlib.sha256(b"_evaluate.py\0" + source.read_bytes()).hexdigest()
    assert module_source_digest("modelloop.pipeline._evaluate") == expected
    evaluate = STEPS["evaluate"]
    assert step_code_digest(evaluate, ("modelloop.pipeline._evaluate",)) != step_code_digest(
        evaluate, ()
    )


def test_lambdas_and_closures_given_in_python_never_share_a_cache_entry(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    def tree(depth: int) -> Any:
        def build() -> Any:
            return DecisionTreeClassifier(max_depth=depth, random_state=0)

        return build

    builders = [
        lambda: LogisticRegression(max_iter=500),
        lambda: DecisionTreeClassifier(max_depth=1, random_state=0),
        tree(1),
        tree(8),
    ]
    seen = []
    for build in builders:
        spec = {**small_spec, "model": {"estimator": build, "params": {}}}
        result = Pipeline(spec, base_dir=cancer_csv.parent).run(client)
        assert not result.step("train").cache_hit
        model = _model(client, result).model
        seen.append((type(model).__name__, getattr(model, "max_depth", None)))
    assert seen == [
        ("LogisticRegression", None),
        ("DecisionTreeClassifier", 1),
        ("DecisionTreeClassifier", 1),
        ("DecisionTreeClassifier", 8),
    ]


def test_user_files_are_their_own_modules(
    client: Any, small_spec: dict[str, Any], cancer_csv: Path, tmp_path: Path
) -> None:
    from modelloop.pipeline._spec import resolve_callable

    # a file named like a library it would hide is refused, naming the fix
    (tmp_path / "shap.py").write_text("def build():\n    return None\n", encoding="utf-8")
    with pytest.raises(Exception, match="rename the file"):
        resolve_callable("shap.py:build", tmp_path)
    # byte-identical files in two folders each read their own folder
    source = "from pathlib import Path\n\ndef where():\n    return Path(__file__).parent\n"
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "samefile.py").write_text(source, encoding="utf-8")
    first = resolve_callable("samefile.py:where", tmp_path / "a")()
    second = resolve_callable("samefile.py:where", tmp_path / "b")()
    assert (first.name, second.name) == ("a", "b")
