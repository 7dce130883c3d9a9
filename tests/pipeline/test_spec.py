"""The pipeline file: schema, one error per wrong field with its location, overrides, the
Python API and the model builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelloop.exceptions import InvalidInput, NotFound
from modelloop.pipeline import (
    ModelSpec,
    Pipeline,
    PipelineSpec,
    build_model,
    load_spec,
    parse_spec,
)
from modelloop.pipeline._spec import apply_overrides


def _errors(exc: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return str(exc.value).splitlines()


def test_valid_file_loads_with_defaults(write_spec: Any, cancer_spec: dict[str, Any]) -> None:
    spec = load_spec(write_spec(cancer_spec))
    assert spec.name == "cancer"
    assert spec.data.path == "cancer.csv"
    assert spec.split.method == "random" and spec.split.test_size == 0.3
    assert spec.model.params == {"max_iter": 20, "random_state": 0}
    assert spec.register is not None and spec.register.alias == "champion"
    assert spec.validation.reference == "champion"
    assert spec.tune is None and not spec.tuning
    assert spec.experiment_name == "cancer"


def test_every_wrong_field_reported_with_its_location(
    write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    cancer_spec["modell"] = {}
    cancer_spec["split"]["test_size"] = 1.5
    cancer_spec["model"]["estimator"] = "not a path"
    cancer_spec["tune"] = {
        "space": {"lr": {"type": "exponential", "low": 0, "high": 1}},
        "n_trials": 0,
    }
    cancer_spec["evaluation"]["min_segment_rows"] = "many"
    with pytest.raises(InvalidInput) as exc:
        load_spec(write_spec(cancer_spec))
    errors = _errors(exc)
    assert "modelloop.yaml: modell: unknown field" in errors
    assert any(
        e.startswith("modelloop.yaml: split.test_size: ") and "less than 1" in e for e in errors
    )
    assert any(
        e.startswith("modelloop.yaml: model.estimator: ") and "'not a path'" in e for e in errors
    )
    assert any(e.startswith("modelloop.yaml: tune.space.lr.type: ") for e in errors)
    assert any(e.startswith("modelloop.yaml: tune.n_trials: ") for e in errors)
    assert any(e.startswith("modelloop.yaml: evaluation.min_segment_rows: ") for e in errors)
    assert len(errors) == 6


def test_missing_required_fields_and_cross_field_rules(cancer_spec: dict[str, Any]) -> None:
    del cancer_spec["target"]
    cancer_spec["data"] = {"path": "a.csv", "callable": "pkg.mod:fn"}
    cancer_spec["split"] = {"method": "time", "column": "date"}
    with pytest.raises(InvalidInput) as exc:
        parse_spec(cancer_spec)
    errors = _errors(exc)
    assert "pipeline: target: required field missing" in errors
    assert any(e.startswith("pipeline: data: give exactly one of") for e in errors)
    assert any(
        e.startswith("pipeline: split: ") and "exactly one of 'cutoff' or 'fraction'" in e
        for e in errors
    )


def test_target_in_features_and_tuning_without_space(cancer_spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_spec(cancer_spec, overrides={"features": [*cancer_spec["features"], "label"]})
    assert _errors(exc) == ["pipeline: features: the target 'label' is also listed in 'features'"]
    with pytest.raises(InvalidInput) as exc:
        parse_spec(cancer_spec, overrides={"tune": {"n_trials": 3}})
    errors = _errors(exc)
    assert len(errors) == 1
    assert errors[0].startswith("pipeline: tune: ") and "search 'space'" in errors[0]


def test_malformed_gate_named_with_its_index(cancer_spec: dict[str, Any]) -> None:
    cancer_spec["gates"] = ["auc >= 0.8", "auc is great"]
    with pytest.raises(InvalidInput) as exc:
        parse_spec(cancer_spec, source="modelloop.yaml")
    assert str(exc.value).startswith("modelloop.yaml: gates.1: ")
    assert "auc is great" in str(exc.value)


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "modelloop.yaml"
    path.write_text("name: x\ndata: [unclosed\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"modelloop.yaml: not valid YAML \(line \d+"):
        load_spec(path)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no pipeline file"):
        load_spec(tmp_path / "nope.yaml")


def test_overrides_are_yaml_typed_dotted_paths(
    write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    path = write_spec(cancer_spec)
    spec = load_spec(
        path,
        [
            "model.params.max_iter=50",
            "model.params.learning_rate=0.05",
            "split.stratify=false",
            "evaluation.segments=[size]",
            "gates.0=auc >= 0.9",
            "register.alias=null",
            "tune.space.learning_rate={type: float, low: 0.01, high: 0.3, log: true}",
            "tune.n_trials=4",
        ],
    )
    assert spec.model.params["max_iter"] == 50 and isinstance(spec.model.params["max_iter"], int)
    assert spec.model.params["learning_rate"] == 0.05
    assert spec.split.stratify is False
    assert spec.evaluation.segments == ["size"]
    assert spec.gates == ["auc >= 0.9"]
    assert spec.register is not None and spec.register.alias is None
    assert spec.tune is not None and spec.tune.space["learning_rate"].log is True
    assert spec.tuning


def test_override_errors_name_the_key(cancer_spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match=r"expected key.path=value"):
        apply_overrides(cancer_spec, ["model.params.max_iter"])
    with pytest.raises(InvalidInput, match=r"cannot set 'target.x': target is not a mapping"):
        apply_overrides(cancer_spec, ["target.x=1"])
    with pytest.raises(InvalidInput, match="'5' is not an index of a list of 1"):
        apply_overrides(cancer_spec, ["gates.5=auc > 0"])
    # an override that makes the spec invalid is reported at its location
    with pytest.raises(InvalidInput, match=r"pipeline: split.test_size: "):
        parse_spec(cancer_spec, overrides={"split.test_size": "half"})


def test_every_wrong_override_is_reported_at_once(cancer_spec: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as exc:
        apply_overrides(
            cancer_spec,
            ["model.params.max_iter", "target.x=1", "split.seed=3", "gates.5=auc > 0"],
            source="modelloop.yaml",
        )
    assert _errors(exc) == [
        "--set 'model.params.max_iter': expected key.path=value",
        "modelloop.yaml: cannot set 'target.x': target is not a mapping",
        "override 'gates.5': '5' is not an index of a list of 1",
    ]


def test_python_api_accepts_dict_or_spec(cancer_spec: dict[str, Any], cancer_csv: Path) -> None:
    from_dict = Pipeline(cancer_spec, base_dir=cancer_csv.parent)
    from_model = Pipeline(PipelineSpec(**cancer_spec), base_dir=cancer_csv.parent)
    assert from_dict.spec == from_model.spec
    tuned = Pipeline(
        from_model.spec,
        overrides={"tune": {"space": {"max_iter": {"type": "int", "low": 5, "high": 30}}}},
    )
    assert tuned.spec.tuning
    assert tuned.step_names == [
        "load",
        "validate",
        "split",
        "tune",
        "train",
        "evaluate",
        "explain",
        "gate",
        "register",
    ]
    assert "tune" not in from_dict.step_names


def test_from_file_resolves_paths_next_to_the_file(
    write_spec: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    pipe = Pipeline.from_file(write_spec(cancer_spec), ["model.params.max_iter=7"])
    assert pipe.base_dir == cancer_csv.parent.resolve()
    assert pipe.source == "modelloop.yaml"
    assert pipe.spec.model.params["max_iter"] == 7


def test_build_model_class_function_and_override(tmp_path: Path) -> None:
    model = build_model(
        ModelSpec(estimator="sklearn.linear_model:LogisticRegression", params={"C": 0.5}),
        {"max_iter": 50},
    )
    assert type(model).__name__ == "LogisticRegression"
    assert (model.C, model.max_iter) == (0.5, 50)
    (tmp_path / "mymodel.py").write_text(
        "from sklearn.tree import DecisionTreeClassifier\n"
        "def make(depth=2):\n    return DecisionTreeClassifier(max_depth=depth)\n",
        encoding="utf-8",
    )
    desc = {"estimator": "mymodel.py:make", "params": {"depth": 3}, "base_dir": str(tmp_path)}
    assert build_model(desc).max_depth == 3
    assert build_model(desc, {"depth": 5}).max_depth == 5


def test_build_model_errors_name_the_problem() -> None:
    with pytest.raises(InvalidInput, match=r"model.params: .*max_iterr"):
        build_model({"estimator": "sklearn.linear_model.LogisticRegression"}, {"max_iterr": 5})
    with pytest.raises(InvalidInput, match=r"cannot import 'no_such_pkg.mod'"):
        build_model({"estimator": "no_such_pkg.mod:Thing"})
    with pytest.raises(InvalidInput, match="has no attribute 'Nope'"):
        build_model({"estimator": "sklearn.linear_model:Nope"})
    with pytest.raises(InvalidInput, match="not an estimator"):
        build_model({"estimator": "builtins:dict"})


def test_wrong_model_param_fails_before_any_run(
    client: Any, cancer_spec: dict[str, Any], cancer_csv: Path
) -> None:
    cancer_spec["model"]["params"]["max_iterr"] = 5
    pipe = Pipeline(cancer_spec, base_dir=cancer_csv.parent, source="modelloop.yaml")
    with pytest.raises(InvalidInput, match=r"modelloop.yaml: model.params: .*max_iterr"):
        pipe.run(client)
    assert not client.search_runs().items


def test_unquoted_yaml_dates_and_numbers_are_cutoffs(
    write_spec: Any, cancer_spec: dict[str, Any]
) -> None:
    path = write_spec(cancer_spec)
    text = path.read_text(encoding="utf-8").replace(
        "split:\n", "split:\n  method: time\n  column: day\n  cutoff: 2013-02-15\n", 1
    )
    text = text.replace("  method: random\n", "").replace("  test_size: 0.3\n  seed: 1\n", "")
    path.write_text(text, encoding="utf-8")
    assert load_spec(path).split.cutoff == "2013-02-15"
    assert load_spec(path, ["split.cutoff=2013-02-15 06:30:00"]).split.cutoff.startswith(
        "2013-02-15T06:30"
    )
    assert load_spec(path, ["split.cutoff=300"]).split.cutoff == "300"
    assert load_spec(path, ["split.cutoff=2.5"]).split.cutoff == "2.5"
    with pytest.raises(InvalidInput, match=r"split.cutoff: expected a date"):
        load_spec(path, ["split.cutoff=true"])


def test_scientific_notation_override_is_a_float(cancer_spec: dict[str, Any]) -> None:
    spec = parse_spec(
        cancer_spec, overrides=["model.params.C=1e-3", "model.params.tol=-2.5E+2", "name=e5"]
    )
    assert spec.model.params["C"] == 0.001 and isinstance(spec.model.params["C"], float)
    assert spec.model.params["tol"] == -250.0
    assert spec.name == "e5"
    commit = parse_spec(cancer_spec, overrides=["data.args.commit=5e81234"])
    assert commit.data.args["commit"] == "5e81234"  # a git hash is not infinity


def test_duplicate_yaml_keys_are_refused_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "modelloop.yaml"
    path.write_text(
        "name: a\ntarget: y\nmodel:\n  estimator: m.py:f\n  params: {}\n"
        "data: {path: d.csv}\ntarget: z\n",
        encoding="utf-8",
    )
    with pytest.raises(
        InvalidInput, match=r"modelloop.yaml: key 'target' given twice \(line 2 and"
    ):
        load_spec(path)


def test_tune_metric_and_direction_are_checked_when_read(cancer_spec: dict[str, Any]) -> None:
    tune = {"space": {"max_iter": {"type": "int", "low": 5, "high": 30}}}
    with pytest.raises(InvalidInput, match=r"tune: unknown metric 'aucc'"):
        parse_spec({**cancer_spec, "tune": {**tune, "metric": "aucc"}})
    with pytest.raises(InvalidInput, match=r"tune: 'log_loss' improves when it goes down"):
        parse_spec({**cancer_spec, "tune": {**tune, "metric": "log_loss", "direction": "maximize"}})
    spec = parse_spec({**cancer_spec, "tune": {**tune, "study": "shared-cancer"}})
    assert spec.tune is not None and spec.tune.study == "shared-cancer"


def test_sql_and_callable_sources_are_read_every_run_by_default() -> None:
    from modelloop.pipeline import DataSpec

    assert DataSpec(path="d.csv").cached
    assert not DataSpec(sql="select 1", url="sqlite://").cached
    assert not DataSpec(callable="m.py:load").cached
    assert DataSpec(callable="m.py:load", cache=True).cached


def test_python_api_takes_callables(cancer_spec: dict[str, Any], cancer_csv: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    def load() -> Any:
        import pandas as pd

        return pd.read_csv(cancer_csv)

    spec = parse_spec(
        {
            **cancer_spec,
            "data": {"callable": load},
            "model": {"estimator": LogisticRegression, "params": {"max_iter": 300}},
        }
    )
    assert spec.data.callable is load
    model = build_model(spec.model)
    assert isinstance(model, LogisticRegression) and model.max_iter == 300
