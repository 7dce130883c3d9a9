"""``modelloop monitor``: drift, data quality and live accuracy of registered models."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from modelloop.cli._output import (
    JsonOpt,
    console,
    err_console,
    fmt_time,
    print_json,
    row,
    to_jsonable,
)
from modelloop.exceptions import InvalidInput, ModelloopError, NotFound

if TYPE_CHECKING:
    from modelloop.monitoring import AlertRule, MonitorOutcome

monitor_app = typer.Typer(
    help="Drift, data quality and live accuracy of registered models.", no_args_is_help=True
)

ModelArg = Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME/VERSION.")]
WindowOpt = Annotated[
    str,
    typer.Option(
        "--window",
        "-w",
        help="Prediction-log window: day, week, day-1, 30m, 2h, 7d or 10000rows.",
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Current data: a .parquet/.csv file, a folder of Parquet segments or a URL "
        "(s3://bucket/key.parquet) (default: the model's prediction log).",
    ),
]
LabelsOpt = Annotated[
    str | None,
    typer.Option(
        "--labels",
        help="Ground truth (request_id, label) as .parquet/.csv, a folder or a URL "
        "(default: $MODELLOOP_HOME/feedback/<model>).",
    ),
]
SegmentOpt = Annotated[
    str | None, typer.Option("--segment", help="Column to break live metrics down by.")
]

_METRIC_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*([<>])\s*([-+0-9.eE]+)\s*$")
_EVERY = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


#: ``monitor run --fail-on-alert`` exits with this code while an alert of the run fires (the
#: library's own errors use 1-9).
ALERT_EXIT_CODE = 10


def parse_metric_rule(spec: str) -> AlertRule:
    """``accuracy<0.8`` fires below, ``mae>5`` above."""
    from modelloop.monitoring import MetricAbove, MetricBelow

    m = _METRIC_RULE.match(spec)
    try:
        if not m:
            raise ValueError("not METRIC<NUMBER or METRIC>NUMBER")
        name, op, value = m.group(1), m.group(2), float(m.group(3))
    except ValueError:
        raise InvalidInput(
            f"bad --alert-metric {spec!r}: use e.g. 'accuracy<0.8' or 'mae>5'"
        ) from None
    try:
        return MetricBelow(name, value) if op == "<" else MetricAbove(name, value)
    except InvalidInput as exc:
        raise InvalidInput(f"bad --alert-metric {spec!r}: {exc}") from None


def parse_every(spec: str) -> float:
    """``30s``, ``10m``, ``1h``, ``1d`` in seconds."""
    m = _EVERY.match(spec.strip())
    if not m:
        raise InvalidInput(f"bad --every {spec!r}: use e.g. 30s, 10m, 1h or 1d")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _options(
    drift_share: float | None,
    features: list[str],
    metrics: list[str],
    quality: bool,
    every: str | None,
    webhooks: list[str],
) -> tuple[list[AlertRule], float | None, list[Any]]:
    """The alert rules, the interval and the webhook notifiers, every option checked before
    any work: all the wrong ones are reported together."""
    from modelloop.monitoring import DriftShareAbove, FeatureDrifted, QualityBreach, WebhookNotifier

    errors: list[str] = []
    rules: list[AlertRule] = []
    if drift_share is not None:
        if 0 < drift_share <= 1:
            rules.append(DriftShareAbove(drift_share))
        else:
            errors.append(f"bad --alert-drift-share {drift_share:g}: use a share in (0, 1]")
    rules += [FeatureDrifted(c) for c in features]
    for spec in metrics:
        try:
            rules.append(parse_metric_rule(spec))
        except InvalidInput as exc:
            errors.append(str(exc))
    if quality:
        rules.append(QualityBreach())
    interval = None
    if every:
        try:
            interval = parse_every(every)
        except InvalidInput as exc:
            errors.append(str(exc))
    hooks = []
    for url in webhooks:
        try:
            hooks.append(WebhookNotifier(url))
        except InvalidInput as exc:
            errors.append(f"bad --webhook: {exc}")
    if errors:
        raise InvalidInput("; ".join(errors))
    return rules, interval, hooks


def _print_webhook_failures(hooks: list[Any]) -> None:
    for h in hooks:
        for why in h.take_failures():
            err_console.print(f"[yellow]webhook failed:[/] {escape(why)}", soft_wrap=True)


def _outcome_json(o: MonitorOutcome) -> dict[str, Any]:
    return {
        "model": o.model,
        "version": o.version,
        "result_id": o.record.result_id if o.record else None,
        "rows": o.result.window.get("rows"),
        "versions": [
            {
                "version": v.version,
                "rows": v.rows,
                "labelled": v.labelled,
                "metrics": dict(v.metrics),
                "outputs_drifted": list(v.prediction_drift.drifted_columns)
                if v.prediction_drift
                else None,
                "note": v.note,
            }
            for v in o.result.versions
        ],
        "seconds": round(o.seconds, 3),
        "result": o.result.to_dict(),
        "alerts": [e.to_dict() for e in o.events],
    }


def _figures(metrics: Any) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None)


def _print_outcome(o: MonitorOutcome) -> None:
    drift = o.result.drift
    assert drift is not None
    verdict = "[bold red]DRIFT[/]" if drift.dataset_drift else "[green]no dataset drift[/]"
    console.print(
        f"{escape(o.model)}: {o.result.window.get('rows')} rows; inputs against "
        f"v{o.version}'s reference: {verdict}, {len(drift.drifted_columns)}/{drift.n_tested} "
        f"columns drifted ({drift.correction} correction) in {o.seconds:.2f} s"
    )
    for v in o.result.versions:
        parts = [f"v{v.version}: {v.rows} rows"]
        if v.prediction_drift is not None:
            outs = ", ".join(v.prediction_drift.drifted_columns) or "none"
            parts.append(f"outputs drifted vs its own reference: {outs}")
        if v.labelled:
            parts.append(f"{v.labelled} labelled: {_figures(v.metrics)}")
        if v.note:
            parts.append(v.note)
        console.print(escape("; ".join(parts)), soft_wrap=True)
    table = Table(show_lines=False)
    for col in (
        "column",
        "method",
        "statistic",
        "lower bound / negligible",
        "p / alpha",
        "drifted",
    ):
        table.add_column(col)
    shown = [(c.column, c) for c in drift.columns]
    for v in o.result.versions:
        outputs = v.prediction_drift.columns if v.prediction_drift else ()
        shown += [(f"{c.column} (v{v.version})", c) for c in outputs]
    for name, c in shown:
        p = f"{c.adjusted_p_value:.3g}" if c.adjusted_p_value is not None else "-"
        stat = "-" if c.statistic is None else f"{c.statistic:.4g}"
        bound = "-"
        if c.ci_low is not None and c.min_effect is not None:
            bound = f"{c.ci_low:.4g} / {c.min_effect:g}"
        drifted = Text("yes", style="red") if c.drifted else Text(c.verdict)
        table.add_row(*row(name, c.method, stat, bound, f"{p} / {c.threshold:g}", drifted))
    console.print(table)
    for name, note in drift.notes.items():  # datetimes and identifiers: not tested for drift
        console.print(f"{escape(name)}: {escape(note)}", soft_wrap=True)
    if o.result.calibrated is not None:
        _print_calibrated(o.result.calibrated)
    if o.result.quality and o.result.quality.breaches:
        issues = ", ".join(f"{c}: {i}" for c, i in o.result.quality.breaches)
        console.print(f"[yellow]data quality:[/] {escape(issues)}")
    if o.result.performance:
        figures = _figures(o.result.performance.overall.metrics)
        console.print(f"live performance, all versions: {figures}")
    for e in o.events:
        colour = "red" if e.status == "firing" else "green"
        console.print(f"[{colour}]alert {e.status}:[/] {escape(e.rule)}: {escape(e.message)}")


def _print_calibrated(cal: Any) -> None:
    verdict = "[bold red]outside[/]" if cal.dataset_drift else "[green]within[/]"
    season = f" ({cal.season} slot {cal.slot})" if cal.season else ""
    console.print(
        f"history-calibrated{season}: {verdict} the normal range, {len(cal.flagged_columns)}/"
        f"{cal.n_judged} columns flagged"
    )
    table = Table(show_lines=False)
    for col in ("column", "distance", "normal range", "verdict"):
        table.add_column(col)
    for c in cal.columns:
        dist = "-" if c.distance is None else f"{c.distance:.4g}"
        rng = "-" if c.low is None else f"{c.low:.4g} .. {c.high:.4g}"
        mark = Text(c.verdict, style="red") if c.flagged else Text(c.verdict)
        table.add_row(*row(c.column, dist, rng, mark))
    console.print(table)


def _monitor_once(
    model: str,
    window: str,
    data: str | None,
    labels: str | None,
    segment: str | None,
    rules: list[AlertRule],
    notifiers: list[Any],
    quiet: bool,
) -> MonitorOutcome:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from modelloop._client import default_client
    from modelloop.monitoring import run_monitor

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as progress:
        task = progress.add_task(f"monitoring {model}", total=None)

        def on_rows(n: int) -> None:
            progress.update(task, description=f"monitoring {model}: {n:,} rows read")

        return run_monitor(
            default_client(),
            model,
            window=window,
            data=data,
            labels=labels,
            segment=segment,
            rules=rules,
            notifiers=notifiers,
            progress=on_rows,
        )


@monitor_app.command("run")
def monitor_run(
    model: ModelArg,
    window: WindowOpt = "day",
    data: DataOpt = None,
    labels: LabelsOpt = None,
    segment: SegmentOpt = None,
    every: Annotated[
        str | None, typer.Option("--every", help="Run on a schedule, e.g. 10m (default: once).")
    ] = None,
    max_runs: Annotated[
        int | None, typer.Option("--max-runs", help="With --every: stop after N runs.", min=1)
    ] = None,
    alert_drift_share: Annotated[
        float | None,
        typer.Option("--alert-drift-share", help="Alert when this share of columns drifts."),
    ] = 0.5,
    alert_feature: Annotated[
        list[str] | None,
        typer.Option("--alert-feature", help="Alert when this column drifts (repeatable)."),
    ] = None,
    alert_metric: Annotated[
        list[str] | None,
        typer.Option("--alert-metric", help="e.g. 'accuracy<0.8' or 'mae>5' (repeatable)."),
    ] = None,
    alert_quality: Annotated[
        bool, typer.Option("--alert-quality/--no-alert-quality", help="Alert on quality breaches.")
    ] = True,
    webhook: Annotated[
        list[str] | None,
        typer.Option("--webhook", help="POST alert changes as JSON to this URL (repeatable)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Expose drift, quality, live-metric and alert gauges for Prometheus on "
            "127.0.0.1:PORT/metrics while running.",
            min=1,
            max=65535,
        ),
    ] = None,
    alert_anomalies: Annotated[
        bool,
        typer.Option(
            "--alert-anomalies",
            help="Alert while the model's operational history (modelloop serve) has an anomaly "
            "still going on: latency, errors, traffic (see modelloop ops anomalies).",
        ),
    ] = False,
    anomaly_since: Annotated[
        str,
        typer.Option(
            "--anomaly-since", help="History the anomaly rule learns from, e.g. 7d or 12h."
        ),
    ] = "7d",
    anomaly_prometheus: Annotated[
        str | None,
        typer.Option(
            "--anomaly-prometheus",
            help="Read the operational history of the anomaly rule from this Prometheus "
            "(http://host:9090, scraping the server) instead of the one modelloop serve records.",
        ),
    ] = None,
    fail_on_alert: Annotated[
        bool,
        typer.Option(
            "--fail-on-alert",
            help=f"Exit with code {ALERT_EXIT_CODE} when an alert of this run is firing at the "
            "end (for CI).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compute drift, data quality and live metrics for a window; store them; raise alerts."""
    from modelloop._client import default_client
    from modelloop.monitoring import PrometheusNotifier
    from modelloop.registry import parse_model_spec

    rules, interval, hooks = _options(
        alert_drift_share,
        alert_feature or [],
        alert_metric or [],
        alert_quality,
        every,
        webhook or [],
    )
    if alert_anomalies:
        from modelloop.aiops import OpsAnomalyRule

        rules.append(OpsAnomalyRule(since=anomaly_since, prometheus=anomaly_prometheus))
    notifiers: list[Any] = list(hooks)  # alert changes are printed below as well
    hook_log = logging.getLogger("modelloop.monitoring.notifiers")
    # their failures are printed below, once: not a second time by the log (added once per
    # process, not once per invocation)
    if hooks and not any(isinstance(h, logging.NullHandler) for h in hook_log.handlers):
        hook_log.addHandler(logging.NullHandler())
    gauges = None
    if metrics_port is not None:
        from prometheus_client import start_http_server

        gauges = PrometheusNotifier()
        # Loopback only: this endpoint has no authentication.
        start_http_server(metrics_port, addr="127.0.0.1", registry=gauges.registry)
        notifiers.append(gauges)
    stop = threading.Event()
    if interval is not None:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runs = 0
    try:
        while True:
            started = time.monotonic()
            try:
                outcome = _monitor_once(
                    model, window, data, labels, segment, rules, notifiers, quiet=as_json
                )
            except ModelloopError as exc:
                if interval is None:
                    raise
                # On a schedule a quiet window or a passing outage must not end monitoring.
                err_console.print(f"[yellow]run {runs + 1} skipped:[/] {escape(str(exc))}")
            else:
                if gauges is not None:  # every stored state, not only the ones that changed
                    for a in default_client().store.list_alerts(outcome.model):
                        gauges.alert_firing.labels(a.model_name, a.rule).set(float(a.firing))
                if as_json:
                    print_json(_outcome_json(outcome))
                else:
                    _print_outcome(outcome)
            _print_webhook_failures(hooks)  # those known by now; the rest after closing
            runs += 1
            if interval is None or (max_runs is not None and runs >= max_runs):
                break
            if stop.wait(max(0.0, interval - (time.monotonic() - started))):
                break
    except KeyboardInterrupt:
        pass
    finally:
        for h in hooks:
            h.close()
        _print_webhook_failures(hooks)
    if fail_on_alert:
        store = default_client().store
        name = parse_model_spec(model).name
        now_firing = {a.rule for a in store.list_alerts(name, firing_only=True)}
        firing = [r.name for r in rules if r.name in now_firing]
        if firing:
            err_console.print(f"alerts firing: {escape(', '.join(firing))}")
            raise typer.Exit(ALERT_EXIT_CODE)


@monitor_app.command("report")
def monitor_report(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML report.")],
    window: WindowOpt = "day",
    data: DataOpt = None,
    labels: LabelsOpt = None,
    segment: SegmentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML report: distributions, drift table, live performance."""
    from modelloop.monitoring import describe_versions, render_html

    o = _monitor_once(model, window, data, labels, segment, [], [], quiet=as_json)
    assert o.result.drift is not None
    html = render_html(
        o.profile,
        o.summary,
        o.result.drift,
        quality=o.result.quality,
        performance=o.result.performance,
        title=f"{o.model}: {describe_versions(o.result.versions)} — window {window}",
        versions=o.result.versions,
        version_details=o.version_details,
        reference_version=o.version,
        calibrated=o.result.calibrated,
    )
    _write_atomic(out, html)
    if as_json:
        print_json({**_outcome_json(o), "report": str(out)})
    else:
        _print_outcome(o)
        console.print(f"report written to {out} ({out.stat().st_size / 1e6:.1f} MB)")


@monitor_app.command("history")
def monitor_history(
    model: Annotated[str, typer.Argument(help="Model name.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many results.", min=1)] = 30,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also chart them into this HTML file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's stored monitoring results over time (drift share, live metrics)."""
    from modelloop._client import default_client
    from modelloop.monitoring import render_history_html

    store = default_client().store
    results = store.list_monitoring_results(model, limit=limit)
    if out is not None:
        events = store.list_alert_events(model)
        if results:  # the events of the charted period only
            events = [e for e in events if e.timestamp >= results[0].created_at]
        _write_atomic(out, render_history_html(model, results, events))
    if as_json:
        print_json(
            {
                "results": [
                    {k: v for k, v in to_jsonable(r).items() if k != "payload"} for r in results
                ]
            }
        )
        return
    table = Table(title=f"{model}: {len(results)} result(s)")
    for col in ("id", "when", "versions", "rows", "drifted share", "drifted", "metrics"):
        table.add_column(col, overflow="fold")
    for r in results:
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in r.metrics.items() if v is not None)
        share = "-" if r.share_drifted is None else f"{r.share_drifted:.0%}"
        served = [f"v{v['version']}" for v in r.payload.get("versions") or []]
        table.add_row(
            *row(
                r.result_id,
                fmt_time(r.created_at),
                ", ".join(served) or r.model_version,
                r.num_rows,
                share,
                ", ".join(r.drifted_columns),
                metrics,
            )
        )
    console.print(table)


@monitor_app.command("alerts")
def monitor_alerts(
    model: Annotated[str | None, typer.Argument(help="Model name (default: all).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include resolved alerts.")] = False,
    resolve: Annotated[
        list[str] | None,
        typer.Option(
            "--resolve",
            help="Mark this rule of MODEL resolved, e.g. after removing the rule (repeatable).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List firing alerts (or all alert states with --all); resolve them by hand."""
    import dataclasses

    from modelloop._client import default_client

    store = default_client().store
    for rule in resolve or []:
        if model is None:
            raise InvalidInput("--resolve needs the MODEL argument")
        current = store.get_alert(model, rule)
        if current is None:
            raise NotFound(f"model {model!r} has no alert {rule!r}")
        now = int(time.time() * 1000)
        store.transition_alert(
            dataclasses.replace(
                current, firing=False, since=now, updated_at=now, message="resolved by hand"
            )
        )
    alerts = store.list_alerts(model, firing_only=not show_all)
    if as_json:
        print_json({"alerts": alerts})
        return
    table = Table(title=f"{len(alerts)} alert(s)")
    for col in ("model", "rule", "state", "since", "message"):
        table.add_column(col, overflow="fold")
    for a in alerts:
        state = Text("firing", style="red") if a.firing else Text("resolved")
        table.add_row(*row(a.model_name, a.rule, state, fmt_time(a.since), a.message))
    console.print(table)


@monitor_app.command("reference")
def monitor_reference(
    model: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS.")],
    data: Annotated[
        str, typer.Option("--data", help="Reference data (.parquet or .csv; a path or a URL).")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Compute and attach a version's reference profile from a data file."""
    from modelloop._client import default_client
    from modelloop.cli._output import read_frame
    from modelloop.monitoring import REFERENCE_TAG

    client = default_client()
    mv = client.resolve(model if model.startswith("models:/") else f"models:/{model}")
    frame = read_frame(data)
    mv = client.set_reference(mv.name, mv.version, frame)
    if as_json:
        print_json(
            {
                "name": mv.name,
                "version": mv.version,
                "rows": len(frame),
                "reference_profile": mv.tags[REFERENCE_TAG],
            }
        )
        return
    console.print(
        f"{mv.name} v{mv.version}: reference profile from {len(frame)} rows "
        f"(sha256 {mv.tags[REFERENCE_TAG][:16]}…)"
    )


@monitor_app.command("calibrate")
def monitor_calibrate(
    model: ModelArg,
    history: Annotated[
        str, typer.Option("--history", help="How far back the prediction log is read: 14d, 8w.")
    ] = "14d",
    window: Annotated[
        str, typer.Option("--window", "-w", help="Length of each past window: 30m, 1h, 1d.")
    ] = "1h",
    season: Annotated[
        str | None,
        typer.Option("--season", help="Align on hour, weekday or month (default: none)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Historical data (.parquet/.csv with a timestamp column) instead of "
            "the prediction log.",
        ),
    ] = None,
    timestamp: Annotated[
        str, typer.Option("--timestamp", help="The timestamp column of --data.")
    ] = "timestamp",
    k: Annotated[
        float, typer.Option("--k", help="Width of the normal range in robust sd.", min=0.1)
    ] = 3.5,
    as_json: JsonOpt = False,
) -> None:
    """Learn each input's normal distance from the reference on past healthy windows (opt-in
    history-calibrated drift); later `monitor run` results show the calibrated verdict."""
    from modelloop._client import default_client
    from modelloop.monitoring import CALIBRATION_TAG, calibrate_model

    mv, cal = calibrate_model(
        default_client(),
        model,
        history=history,
        window=window,
        season=season,
        data=data,
        timestamp=timestamp,
        k=k,
    )
    if as_json:
        print_json(
            {
                "name": mv.name,
                "version": mv.version,
                "calibration": mv.tags[CALIBRATION_TAG],
                **cal.to_dict(),
            }
        )
        return
    console.print(
        f"{mv.name} v{mv.version}: calibrated on {cal.n_windows} past windows of {window}"
        + (f", aligned by {season}" if season else "")
    )
    table = Table(show_lines=False)
    for col in ("column", "method", "median distance", "robust sd", "windows"):
        table.add_column(col)
    for c in cal.columns.values():
        r = c.pooled
        table.add_row(*row(c.column, c.method, f"{r.center:.4g}", f"{r.spread:.4g}", r.n_windows))
    console.print(table)


def _write_atomic(path: Path, text: str) -> None:
    from modelloop._fs import atomic_file

    with atomic_file(path) as fh:
        fh.write(text.encode("utf-8"))
