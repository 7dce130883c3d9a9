"""``modelloop ops``: the operational history of served models and its anomalies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelloop.cli._output import JsonOpt, cli_client, console, print_json

ops_app = typer.Typer(
    help="Operational history of served models (recorded by modelloop serve) and its anomalies.",
    no_args_is_help=True,
)

ModelArg = Annotated[str, typer.Argument(help="Model name (as served).")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="Start: a duration ago (30m, 2h, 7d) or an ISO date-time (default: all)."
    ),
]


PrometheusOpt = Annotated[
    str | None,
    typer.Option(
        "--prometheus",
        help="Read the history from this Prometheus (http://host:9090), which scrapes the "
        "server's /metrics, instead of the one modelloop serve records (--since defaults to 1d).",
    ),
]
PromStepOpt = Annotated[
    float,
    typer.Option(
        "--step",
        help="With --prometheus: seconds per row (at least the scrape interval).",
        min=0.001,
    ),
]


def _history(model: str, since: str | None, prometheus: str | None, step: float) -> Any:
    from modelloop._config import Settings
    from modelloop.aiops import read_ops_history, read_prometheus_history

    if prometheus:
        return read_prometheus_history(model, prometheus, since, step_s=step)
    return read_ops_history(model, since, home=Settings.from_env().home)


@ops_app.command("anomalies")
def ops_anomalies(
    model: ModelArg,
    since: SinceOpt = None,
    prometheus: PrometheusOpt = None,
    step: PromStepOpt = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Spikes, level shifts, variance changes and error bursts in a model's operational history,
    each with its span, expected band and observed value."""
    from modelloop._config import Settings
    from modelloop.aiops import scan_ops_history

    if prometheus:
        scan = scan_ops_history(model, history=_history(model, since, prometheus, step))
    else:
        scan = scan_ops_history(model, since, home=Settings.from_env().home)
    if as_json:
        print_json(scan.to_dict())
        return
    console.print(
        f"{escape(model)}: {scan.rows} intervals of {scan.step_s:g} s from {scan.start} to "
        f"{scan.end}; {len(scan.anomalies)} anomalies ({len(scan.current())} still going on)"
    )
    for note in scan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if not scan.anomalies:
        return
    table = Table()
    for col in ("series", "kind", "start", "end", "observed", "expected", "band", "score"):
        table.add_column(col)
    for a in scan.anomalies:
        table.add_row(
            a.series,
            a.kind,
            f"{a.start:%Y-%m-%d %H:%M:%S}",
            f"{a.end:%Y-%m-%d %H:%M:%S}",
            f"{a.observed:.4g}",
            f"{a.expected:.4g}",
            f"{a.low:.4g} to {a.high:.4g}",
            f"{a.score:+.1f}",
        )
    console.print(table)


@ops_app.command("history")
def ops_history(
    model: ModelArg,
    since: SinceOpt = None,
    prometheus: PrometheusOpt = None,
    step: PromStepOpt = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """The recorded intervals: requests, errors, rejected, latency quantiles, batch size, queue
    depth, CPU and RSS."""
    frame = _history(model, since, prometheus, step)
    if as_json:
        out = frame.assign(timestamp=frame["timestamp"].map(lambda t: t.isoformat()))
        print_json(out.astype(object).where(out.notna(), None).to_dict(orient="records"))
        return
    console.print(frame.to_string(index=False))


# -- demand forecasts, autoscaling plans and their replay ---------------------------------------

HorizonOpt = Annotated[
    str, typer.Option("--horizon", help="How far ahead: a duration (30m, 2h; at most a day).")
]
QuantileOpt = Annotated[
    float,
    typer.Option(
        "--quantile",
        help="Upper quantile of the band (the plan provisions for it); the lower is 1 - this.",
    ),
]
DemandStepOpt = Annotated[
    str | None,
    typer.Option(
        "--step", help="Forecast step (5m, 1h; default 1 h for two weeks of history, else 5 min)."
    ),
]


def _demand(model: str, since: str | None, step: str | None) -> tuple[object, object]:
    from modelloop._config import Settings
    from modelloop.aiops import demand_from_history, read_ops_history
    from modelloop.aiops._forecast import parse_duration
    from modelloop.exceptions import InvalidInput

    frame = read_ops_history(model, since, home=Settings.from_env().home)
    if frame.empty:
        raise InvalidInput(f"model {model!r} has no operational history since {since}")
    step_s = parse_duration(step, "step") if step else None
    return frame, demand_from_history(frame, step_s)


@ops_app.command("forecast")
def ops_forecast(
    model: ModelArg,
    horizon: HorizonOpt = "2h",
    since: SinceOpt = None,
    step: DemandStepOpt = None,
    quantile: QuantileOpt = 0.95,
    as_json: JsonOpt = False,
) -> None:
    """Forecast a model's request rate from its ops history, with a prediction band, by the
    model (seasonal naive, ETS, Theta, MSTL) that wins a rolling-origin backtest;
    every candidate's MASE is against the best seasonal naive."""
    from modelloop.aiops import forecast_demand

    _, demand = _demand(model, since, step)
    fc = forecast_demand(demand, horizon, quantile=quantile)  # type: ignore[arg-type]
    if as_json:
        print_json({"model_name": model, **fc.to_dict()})
        return
    _print_forecast(model, fc)


def _print_forecast(model: str, fc: object) -> None:
    from modelloop.aiops import DemandForecast

    assert isinstance(fc, DemandForecast)
    console.print(
        f"{escape(model)}: {fc.model} chosen (backtest MASE {fc.mase:.3f} vs {fc.baseline}, "
        f"{fc.windows} windows); steps of {fc.step_s:g} s, band q{1 - fc.quantile:.3g} to "
        f"q{fc.quantile:g}"
    )
    for note in fc.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    table = Table(title="backtest")
    for col in ("model", "MAE (req/s)", "MASE"):
        table.add_column(col)
    for name, row in fc.backtest.items():
        table.add_row(name, f"{row['mae']:.4g}", f"{row['mase']:.3f}")
    console.print(table)
    table = Table(title="forecast (req/s)")
    for col in ("start", "mean", "lower", "upper"):
        table.add_column(col)
    for ts, r in fc.frame.iterrows():
        table.add_row(
            f"{ts:%Y-%m-%d %H:%M}", f"{r['mean']:.4g}", f"{r.lower:.4g}", f"{r.upper:.4g}"
        )
    console.print(table)


@ops_app.command("plan")
def ops_plan(
    model: ModelArg,
    slo_ms: Annotated[
        float, typer.Option("--slo-ms", help="Latency SLO: p95 in ms a replica must keep.")
    ] = 100.0,
    capacity: Annotated[
        float | None,
        typer.Option(
            "--capacity",
            help="Requests/s one replica serves within the SLO (default: from the history, "
            "or measured with --measure).",
        ),
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="Measure one replica's capacity with a short load test on loopback: starts "
            "modelloop serve MODEL@ALIAS and sends it the version's input example from 1, 2, "
            "4, ... connections.",
        ),
    ] = False,
    measure_seconds: Annotated[
        float, typer.Option("--measure-seconds", help="With --measure: seconds per level.")
    ] = 3.0,
    measure_body: Annotated[
        str | None,
        typer.Option(
            "--measure-body",
            help="With --measure: a JSON request body to send (default: one row of the "
            "version's input example).",
        ),
    ] = None,
    horizon: HorizonOpt = "2h",
    lead_time: Annotated[
        str, typer.Option("--lead-time", help="A replica's start-up: scale up this early.")
    ] = "2m",
    stabilisation: Annotated[
        str,
        typer.Option("--stabilisation", help="Keep a step's replicas this long after it ends."),
    ] = "10m",
    headroom: Annotated[
        float, typer.Option("--headroom", help="Extra share of capacity on top (0.1 = 10 %).")
    ] = 0.0,
    min_replicas: Annotated[
        int, typer.Option("--min-replicas", help="Never plan fewer replicas than this.")
    ] = 1,
    max_replicas: Annotated[
        int | None,
        typer.Option(
            "--max-replicas", help="Never plan more replicas than this (default: no cap)."
        ),
    ] = None,
    since: SinceOpt = None,
    step: DemandStepOpt = None,
    quantile: QuantileOpt = 0.95,
    out: Annotated[
        str | None, typer.Option("--out", help="Write plan.json and plan.html (chart) here.")
    ] = None,
    manifests: Annotated[
        str | None,
        typer.Option(
            "--manifests",
            help="Also write Kubernetes manifests serving MODEL@ALIAS here (as modelloop deploy "
            "k8s does), with the plan's steps as KEDA cron triggers.",
        ),
    ] = None,
    alias: Annotated[
        str,
        typer.Option("--alias", help="The alias the pods serve (--manifests) and --measure loads."),
    ] = "champion",
    image: Annotated[
        str | None, typer.Option("--image", help="With --manifests: the container image.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replicas ahead of time: the forecast's upper quantile over one replica's capacity at
    the latency SLO, asked for a start-up ahead and kept a stabilisation window after."""
    import math
    from pathlib import Path

    import pandas as pd

    from modelloop.aiops import capacity_from_history, forecast_demand, plan_replicas
    from modelloop.aiops._forecast import parse_duration
    from modelloop.aiops._plan import Capacity
    from modelloop.exceptions import InvalidInput

    if capacity is not None and not (math.isfinite(capacity) and capacity > 0):
        raise InvalidInput(f"--capacity must be a positive requests/s, got {capacity:g}")
    if capacity is not None and measure:
        raise InvalidInput("give --capacity or --measure, not both")
    lead_s = parse_duration(lead_time, "lead time")
    stab_s = parse_duration(stabilisation, "stabilisation")
    frame, demand = _demand(model, since, step)
    assert isinstance(frame, pd.DataFrame) and isinstance(demand, pd.Series)
    levels: list[Any] = []
    if measure:
        cap, levels = _measure(model, alias, slo_ms, measure_seconds, measure_body, as_json)
    elif capacity is not None:
        cap = Capacity(float(capacity), "given", slo_ms, "--capacity")
    else:
        cap = capacity_from_history(frame, slo_ms)
    fc = forecast_demand(demand, horizon, quantile=quantile)
    rss = pd.to_numeric(frame.get("rss_bytes"), errors="coerce") if "rss_bytes" in frame else None
    rss_max = float(rss.max()) if rss is not None and rss.notna().any() else None
    plan = plan_replicas(
        fc,
        cap,
        lead_time=lead_s,
        stabilisation=stab_s,
        headroom=headroom,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        rss_bytes_per_replica=None if rss_max is None or math.isnan(rss_max) else rss_max,
    )
    doc = {"model_name": model, **plan.to_dict()}
    if levels:
        doc["load_test"] = [level.to_dict() for level in levels]
    if manifests:
        doc["manifests"] = _plan_manifests(model, alias, image, plan, Path(manifests))
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        import json

        (folder / "plan.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        recent = demand.iloc[-int(2 * 86_400 / fc.step_s) :]
        (folder / "plan.html").write_text(plan.chart_html(recent), encoding="utf-8")
    if as_json:
        print_json(doc)
        return
    _print_forecast(model, fc)
    console.print(
        f"capacity {cap.rps:.4g} req/s per replica ({cap.source}: {escape(cap.detail)}); "
        f"replicas for q{quantile:g} x (1 + {headroom:g}), lead time {lead_time}, "
        f"stabilisation {stabilisation}"
    )
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    table = Table(title="schedule")
    table.add_column("from")
    table.add_column("replicas")
    for s in plan.schedule:
        table.add_row(f"{s.start:%Y-%m-%d %H:%M:%S}", str(s.replicas))
    console.print(table)
    if out:
        console.print(f"wrote {escape(str(Path(out) / 'plan.json'))} and plan.html")
    if manifests:
        console.print(f"wrote {len(doc['manifests'])} manifests to {escape(manifests)}")


def _measure(
    model: str, alias: str, slo_ms: float, seconds: float, body_file: str | None, quiet: bool
) -> tuple[Any, list[Any]]:
    """The capacity of one replica of MODEL@ALIAS from a load test of a replica started on
    loopback for it (its prediction log and ops history go to a scratch folder, so the test's
    traffic never counts as demand)."""
    import json
    import os
    import tempfile
    from pathlib import Path

    from modelloop.aiops._loadtest import measure_capacity
    from modelloop.exceptions import InvalidInput
    from modelloop.models._package import INPUT_EXAMPLE_FILE
    from modelloop.registry._uri import parse_model_spec
    from modelloop.serving._process import serve_process

    client = cli_client(writes=False)
    ref = f"{model}@{alias}"
    client.resolve(parse_model_spec(ref))  # NotFound (exit 3) when unknown
    if body_file is not None:
        try:
            body = Path(body_file).read_bytes()
            json.loads(body)
        except (OSError, ValueError) as e:
            raise InvalidInput(f"--measure-body {body_file}: not a readable JSON file ({e})") from e
    else:
        folder = client._package_dir(*client._package_ref(f"models:/{ref}"))
        try:
            rows = json.loads((folder / INPUT_EXAMPLE_FILE).read_bytes())
        except FileNotFoundError:
            raise InvalidInput(
                f"{ref} was saved without an input example: pass --measure-body FILE (a JSON "
                "request body) or --capacity"
            ) from None
        if not isinstance(rows, list) or not rows:
            raise InvalidInput(f"the input example of {ref} is empty: pass --measure-body FILE")
        body = json.dumps({"records": rows[:1]}).encode()
    with tempfile.TemporaryDirectory(prefix="modelloop-measure-") as scratch:
        env = {**os.environ, "MODELLOOP_LOG_ROOT": scratch}
        log = Path(scratch) / "serve.log"
        extra = ["--log-level", "warning"]
        with serve_process([ref], log, env=env, extra=extra, what=f"the replica of {ref}") as srv:
            if not quiet:
                console.print(f"load test of {escape(ref)} on {srv.url} ...")
            srv.wait_ready()
            headers = {}
            token = os.environ.get("MODELLOOP_TOKEN")
            if token:
                headers["Authorization"] = f"Bearer {token}"
            url = f"{srv.url}/v1/models/{model}/predict"
            return measure_capacity(url, body, slo_ms, seconds=seconds, headers=headers)


def _plan_manifests(model: str, alias: str, image: str | None, plan: Any, out: Path) -> list[str]:
    """The manifests of ``modelloop deploy k8s MODEL@ALIAS`` with ``plan``'s schedule as the
    ScaledObject's cron triggers; the paths written."""
    from modelloop.cli._output import require_extra
    from modelloop.deploy import DEFAULT_IMAGE, ReplicaStep, kubernetes_manifests, write_manifests
    from modelloop.registry._uri import parse_model_spec

    require_extra("deploy", "yaml")
    ref = f"{model}@{alias}"
    cli_client(writes=False).resolve(parse_model_spec(ref))  # NotFound (exit 3) when unknown
    steps = [ReplicaStep(s.start, s.replicas) for s in plan.schedule]
    top = max([plan.min_replicas, *(s.replicas for s in steps)])
    rss = plan.rss_bytes_per_replica
    written = write_manifests(
        kubernetes_manifests(
            ref,
            image=image or DEFAULT_IMAGE,
            min_replicas=plan.min_replicas,
            max_replicas=plan.max_replicas or top,
            rss_bytes=None if rss is None else int(rss),
            schedule=steps,
        ),
        out,
    )
    return [str(p) for p in written]


@ops_app.command("simulate")
def ops_simulate(
    model: Annotated[
        str | None, typer.Argument(help="Model whose ops history to replay (or --flights).")
    ] = None,
    flights: Annotated[
        bool, typer.Option("--flights", help="Replay the NYC flights 2013 demand (a year).")
    ] = False,
    capacity: Annotated[
        float, typer.Option("--capacity", help="Requests/s one replica serves within the SLO.")
    ] = 5.0,
    startup: Annotated[str, typer.Option("--startup", help="A replica's start-up time.")] = "2m",
    target: Annotated[
        float, typer.Option("--target", help="The reactive policy's target utilisation.")
    ] = 0.7,
    metric_delay: Annotated[
        str, typer.Option("--metric-delay", help="Age of the utilisation the reactive sees.")
    ] = "1m",
    quantile: QuantileOpt = 0.95,
    since: SinceOpt = None,
    step: DemandStepOpt = None,
    warmup: Annotated[
        str, typer.Option("--warmup", help="History only, not counted (the forecasts need it).")
    ] = "14d",
    as_json: JsonOpt = False,
) -> None:
    """Replay a demand series against the rolling predictive plan (with a reactive floor) and
    a reactive HPA-like policy: SLO-violating minutes and replica-hours of each."""
    from modelloop.aiops import (
        PredictivePolicy,
        ReactivePolicy,
        flights_demand,
        simulate_autoscaling,
    )
    from modelloop.aiops._forecast import parse_duration
    from modelloop.exceptions import InvalidInput

    if flights == (model is not None):
        raise InvalidInput("name a MODEL to replay its ops history, or pass --flights")
    demand = flights_demand() if flights else _demand(str(model), since, step)[1]
    startup_s = parse_duration(startup, "start-up")
    reactive = ReactivePolicy(
        target_utilisation=target, metric_delay_s=parse_duration(metric_delay, "metric delay")
    )
    predictive = PredictivePolicy(quantile=quantile, lead_time_s=startup_s)
    common = {
        "capacity_rps": capacity,
        "startup_s": startup_s,
        "warmup_s": parse_duration(warmup, "warm-up"),
    }
    results = [
        simulate_autoscaling(demand, predictive, **common),  # type: ignore[arg-type]
        simulate_autoscaling(demand, reactive, **common),  # type: ignore[arg-type]
    ]
    doc = {
        "capacity_rps": capacity,
        "startup_s": startup_s,
        "results": [r.to_dict() for r in results],
    }
    if as_json:
        print_json(doc)
        return
    table = Table(title=f"replay of {results[0].minutes:g} minutes")
    for col in ("policy", "SLO-violating minutes", "replica-hours", "peak replicas"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.policy, f"{r.violation_minutes:g}", f"{r.replica_hours:.1f}", str(r.peak_replicas)
        )
    console.print(table)
