"""The loop demo: NYC flights 2013, March to December, replayed through a real ``modelloop serve``
with the loop controller on, on a simulated clock, against the January-February champion left
alone.

The calendar: each simulated week is a fixed slot of wall time, ``7 * day_seconds`` for the
traffic of its days (one slice per day) plus ``week_pause_seconds`` at its end, in which the
server's prediction log is flushed, monitoring runs (after a month ends) and the controller ticks.
A simulated day is therefore ``slot / 7`` seconds of wall time, and the loop policy's durations
(windows, stage durations, cooldown, age) are written in that scale. A tick that needs longer
than the pause (a retrain) delays the following weeks: the time it overran is counted and
reported (``slip_s``). Labels of a day are sent after the next day's traffic.
"""

from __future__ import annotations

import bisect
import contextlib
import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelloop.exceptions import InvalidInput, ServiceUnavailable
from modelloop.serving._process import ServeProcess, serve_process

if TYPE_CHECKING:
    import pandas as pd

    from modelloop._client import Client
    from modelloop.store import LoopEvent

__all__ = ["LOOP_MODEL", "LoopDemoResult", "flights_model", "run_loop_demo"]

LOOP_MODEL = "flights-delay"
_YEAR = 2013

#: The loop policy in simulated days; converted to wall seconds with the replay's scale.
_POLICY_DAYS = """\
loop:
  every: {day}                  # 1 simulated day (the demo ticks at each week's end itself)
  cooldown: {cooldown}          # 21 simulated days
  max_retrains_per_day: 100     # counts wall-clock days: the cooldown paces retrains here
  triggers:
    drift_share: 0.5
    metric_drop: {{auc: 0.02}}
    max_age: {max_age}          # 28 simulated days
  training: {{source: log, mode: expanding, min_labelled_rows: 2000}}
  gate: {{metric: auc, window: {gate_window}, min_rows: 300, tolerance: 0.0}}  # 7 days
  rollout:
    canary: {{steps: [0.2, 0.5], min_duration: {min_stage}, max_duration: {max_stage},
             min_outcomes: 150}}  # 6 and 35 simulated days
  judge: {{alpha: 0.05, margin: 0.04, max_p99_latency_ratio: 3.0, max_error_rate: 0.01,
          inconclusive: wait, max_waits: 2}}
"""

_PIPELINE = """\
# written by `modelloop demo loop`: the January-February champion, and its loop
name: flights-delay
experiment: flights-loop-demo
data: {{path: jan-feb.parquet}}
target: delayed
features: [day_of_week, sched_dep_hour, distance, dep_delay, carrier, origin, dest]
task: classification
split: {{method: time, column: timestamp, fraction: 0.2}}
validation: {{reference: none}}
model:
  estimator: modelloop.demo._loop:flights_model
  params: {{max_iter: 100, learning_rate: 0.15, random_state: 0}}
evaluation: {{metrics: [auc, brier, accuracy]}}
explain: {{enabled: false}}
gates: ["auc >= 0.70"]
register: {{model_name: {model}, alias: champion}}
"""


@dataclass(frozen=True)
class LoopDemoResult:
    """The replay's figures: per month (number -> value) for the static January-February
    champion scored in process and for what the looped server answered, the loop's events and
    canary shares, and the wall time."""

    months: list[int]
    rows_per_month: int
    seed: int
    day_seconds: float
    week_pause_seconds: float
    sim_day_wall_s: float
    static_auc_by_month: dict[int, float]
    loop_auc_by_month: dict[int, float]
    static_brier_by_month: dict[int, float]
    loop_brier_by_month: dict[int, float]
    static_auc_mean: float
    loop_auc_mean: float
    static_brier_mean: float
    loop_brier_mean: float
    worst_auc_gap: float
    retrains: int
    promotions: int
    rollbacks: int
    served_rows: int
    failed_requests: int
    champion_by_month: dict[int, list[int]]
    canary_share_by_day: list[dict[str, Any]]
    events: list[dict[str, Any]]
    slip_s: float
    timings_s: dict[str, float]
    wall_s: float
    workdir: str
    page: str | None = None
    policy: str = ""
    notes: list[str] = field(default_factory=list)


def flights_model(max_iter: int = 100, learning_rate: float = 0.15, random_state: int = 0) -> Any:
    """The quickstart's gradient-boosted trees with fewer, larger steps: as accurate on the
    demo's samples, and quicker to retrain (the pipeline file's ``model.estimator``)."""
    from modelloop.demo._quickstart import build_model

    return build_model(random_state=random_state).set_params(
        clf__max_iter=max_iter, clf__learning_rate=learning_rate
    )


# -- the simulated clock and the server ----------------------------------------------------------


class _FrozenClock:
    """The controller's clock: the wall time (epoch ms) of the end of the simulated week being
    judged, held still while a tick runs, so a retrain's own duration is not counted in the
    windows it reads right after (the gate's)."""

    def __init__(self) -> None:
        self.ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.ms


@contextlib.contextmanager
def _server(home: Path, model: str) -> Iterator[ServeProcess]:
    """``modelloop serve MODEL@champion`` over the demo's home, as a process of its own on a
    free loopback port, started (call ``wait_ready``), and stopped on exit."""
    env = {**os.environ, "MODELLOOP_HOME": str(home)}
    for var in ("MODELLOOP_STORE_URL", "MODELLOOP_ARTIFACT_ROOT"):
        env.pop(var, None)
    with serve_process(
        [f"{model}@champion"], home / "server.log", env=env, what="the demo's server"
    ) as server:
        yield server


class _Http:
    """Keep-alive JSON POSTs from a few threads, one connection each."""

    def __init__(self, url: str, threads: int = 6) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="modelloop-demo-http")

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        return conn

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        data = json.dumps(body).encode()
        for attempt in range(2):
            conn = self._conn()
            try:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def post_all(self, path: str, bodies: Sequence[Any]) -> list[tuple[int, Any]]:
        return list(self.pool.map(lambda b: self.post(path, b), bodies))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


# -- data ---------------------------------------------------------------------------------------


def _sample(flights: pd.DataFrame, months: Sequence[int], rows: int, seed: int) -> pd.DataFrame:
    """``rows`` flights of each of ``months`` (all when fewer), in order of departure."""
    import pandas as pd

    flights = flights[flights["month"].isin(list(months))]
    parts = [
        g.sample(min(rows, len(g)), random_state=seed + int(m)) for m, g in flights.groupby("month")
    ]
    frame = pd.concat(parts).sort_values(["date", "sched_dep_hour"], kind="stable")
    return frame.reset_index(drop=True)


def _logged_rows(home: Path, model: str) -> int:
    import pyarrow.parquet as pq

    folder = home / "predictions" / model
    if not folder.is_dir():
        return 0
    total = 0
    for f in folder.glob("*.parquet"):
        with contextlib.suppress(OSError, ValueError):
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def _wait_logged(home: Path, model: str, rows: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _logged_rows(home, model) < rows:
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"the server logged fewer than {rows} predictions after {timeout:.0f} s; see its "
                "log in the demo's folder"
            )
        time.sleep(0.05)


def _scores(label: Any, proba: Any) -> tuple[float | None, float | None]:
    import numpy as np
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y, p = np.asarray(label, dtype=int), np.asarray(proba, dtype=float)
    if len(y) == 0:
        return None, None
    brier = float(brier_score_loss(y, p))
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None
    return auc, brier


# -- the replay ---------------------------------------------------------------------------------


def _write_pipeline(folder: Path, frame: pd.DataFrame, sim_day: float) -> tuple[Path, str]:
    """The January-February training data and the pipeline file with its ``loop:`` section."""
    from modelloop.data import FLIGHTS_FEATURES

    data = frame[[*FLIGHTS_FEATURES, "delayed"]].copy()
    data["timestamp"] = frame["date"].to_numpy()
    data.to_parquet(folder / "jan-feb.parquet", index=False)

    def days(n: float) -> str:
        return f"{n * sim_day:.3f}s"

    policy = _POLICY_DAYS.format(
        day=days(1),
        cooldown=days(21),
        max_age=days(28),
        gate_window=days(7),
        min_stage=days(6),
        max_stage=days(35),
    )
    path = folder / "modelloop.yaml"
    path.write_text(_PIPELINE.format(model=LOOP_MODEL) + policy, encoding="utf-8")
    return path, policy


def _history(client: Client, frame: pd.DataFrame, end: datetime, minutes: float) -> None:
    """January-February as the champion's served history in the log, labelled, before the
    replay starts: a retrain's expanding window begins with the rows the champion learnt from."""
    from modelloop.data import FLIGHTS_FEATURES
    from modelloop.demo._replay import replay_frame

    replay_frame(
        client,
        f"{LOOP_MODEL}@champion",
        frame[[*FLIGHTS_FEATURES, "delayed"]],
        label="delayed",
        minutes=minutes,
        now=end,
    )


def _requests(day: pd.DataFrame, batch: int) -> list[tuple[list[int], dict[str, Any]]]:
    """The flights of one day as requests of up to ``batch`` flights in departure order."""
    from modelloop.data import FLIGHTS_FEATURES

    cols = list(FLIGHTS_FEATURES)
    records = day[cols].to_dict(orient="records")
    idx = day.index.tolist()
    return [
        (idx[i : i + batch], {"records": records[i : i + batch]})
        for i in range(0, len(records), batch)
    ]


def run_loop_demo(
    workdir: str | os.PathLike[str],
    *,
    months: Sequence[int] = tuple(range(3, 13)),
    rows_per_month: int = 4000,
    seed: int = 0,
    day_seconds: float = 0.2,
    week_pause_seconds: float = 2.4,
    batch: int = 5,
    page: str | os.PathLike[str] | None = None,
    on_day: Callable[[int, int, str], None] | None = None,
) -> LoopDemoResult:
    """Replay ``months`` of 2013 through a real server with the loop on; score the static
    January-February champion on the same flights; write ``page`` (HTML) when given.

    ``workdir`` must be empty or absent: it gets its own store, log and pipeline file.
    ``on_day(done, total, date)`` is called after each simulated day.
    """
    import numpy as np

    from modelloop._client import Client
    from modelloop._config import Settings
    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.loop._actions import PipelineActions
    from modelloop.loop._controller import Controller
    from modelloop.loop._policy import load_policy
    from modelloop.loop._server import ServerLink
    from modelloop.monitoring import run_monitor
    from modelloop.pipeline import Pipeline

    months = sorted(set(int(m) for m in months))
    if not months or any(not 3 <= m <= 12 for m in months):
        raise InvalidInput(f"months must be within 3-12 (January-February train), got {months}")
    if rows_per_month < 100:
        raise InvalidInput(f"rows per month must be at least 100, got {rows_per_month}")
    if day_seconds <= 0 or week_pause_seconds < 0 or batch < 1:
        raise InvalidInput("day seconds must be > 0, the week pause >= 0 and the batch >= 1")
    if page is not None and not Path(page).resolve().parent.is_dir():
        raise InvalidInput(f"no folder for the page at {Path(page).parent}: create it first")
    folder = Path(workdir)
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInput(f"the demo's folder {folder} is not empty: give a new or empty one")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    home = folder / "home"
    client = Client(Settings(home=home))
    sim_day = (7 * day_seconds + week_pause_seconds) / 7
    try:
        flights = load_flights([1, 2, *months])
        early = _sample(flights, (1, 2), rows_per_month, seed)
        traffic = _sample(flights, months, rows_per_month, seed)
        pipeline_file, policy_text = _write_pipeline(folder, early, sim_day)
        result = Pipeline.from_file(pipeline_file).run(client)
        if result.registered_version is None:
            raise InvalidInput(f"the January-February champion was not registered: {result.reason}")

        by_day = traffic.groupby(traffic["date"].dt.normalize()).groups
        days = sorted(by_day)
        weeks = [days[i : i + 7] for i in range(0, len(days), 7)]
        answered = {k: np.full(len(traffic), np.nan) for k in ("proba", "version")}
        policy = load_policy(pipeline_file)
        clock = _FrozenClock()
        canary_days: list[dict[str, Any]] = []
        day_starts: list[float] = []
        failed = 0
        slip = 0.0
        timings = dict.fromkeys(("setup", "ticks", "longest_tick", "monitoring", "log_wait"), 0.0)
        with _server(home, LOOP_MODEL) as server:
            # while the server starts: the static champion's answers, and the served history
            static = client.load_model(f"models:/{LOOP_MODEL}/{result.registered_version}")
            static_p = static.predict_proba(traffic[list(FLIGHTS_FEATURES)])[:, 1]
            _history(client, early, datetime.now(UTC), minutes=59 * sim_day / 60)
            server.wait_ready()
            url = server.url
            link = ServerLink(url)
            controller = Controller(
                client.store,
                policy,
                PipelineActions(client, pipeline_file),
                home=home,
                model=LOOP_MODEL,
                server=link,
                clock=clock,
            )
            http_ = _Http(url)
            try:
                pending: list[tuple[str, int]] = []  # (row id, label) of the previous day
                served = _logged_rows(home, LOOP_MODEL)
                monitored_from = time.time()
                last_month = months[0]
                done = 0
                week_at = time.time()
                timings["setup"] = time.perf_counter() - started
                for week in weeks:
                    for j, day in enumerate(week):
                        wait = week_at + j * day_seconds - time.time()
                        if wait > 0:
                            time.sleep(wait)
                        day_starts.append(time.time())
                        rows = traffic.loc[by_day[day]]
                        reqs = _requests(rows, batch)
                        replies = http_.post_all(
                            f"/v1/models/{LOOP_MODEL}/predict", [b for _, b in reqs]
                        )
                        labels: list[tuple[str, int]] = []
                        n_canary = n_rows = 0
                        for (idx, _), (status, reply) in zip(reqs, replies, strict=True):
                            if status != 200 or not isinstance(reply, dict):
                                failed += 1
                                continue
                            ids = reply.get("row_ids") or [reply["request_id"]]
                            canary = reply.get("route") == "canary"
                            for k, i in enumerate(idx):
                                answered["proba"][i] = reply["probabilities"][k][1]
                                answered["version"][i] = reply["model_version"]
                                labels.append((ids[k], int(traffic.at[i, "delayed"])))
                            served += len(idx)
                            n_rows += len(idx)
                            n_canary += len(idx) if canary else 0
                        if pending:
                            _send_labels(http_, pending)
                        pending = labels
                        canary_days.append(
                            {
                                "date": str(day)[:10],
                                "served_canary_share": n_canary / n_rows if n_rows else 0.0,
                            }
                        )
                        done += 1
                        if on_day is not None:
                            on_day(done, len(days), str(day)[:10])
                    end = week_at + len(week) * day_seconds
                    if (wait := end - time.time()) > 0:
                        time.sleep(wait)
                    clock.ms = int(time.time() * 1000)
                    t = time.perf_counter()
                    _wait_logged(home, LOOP_MODEL, served)
                    timings["log_wait"] += time.perf_counter() - t
                    month_now = int(week[-1].month)
                    is_last = week is weeks[-1]
                    if month_now != last_month or is_last:
                        span = max(clock.ms / 1000 - monitored_from, 1.0)
                        t = time.perf_counter()
                        run_monitor(
                            client,
                            f"{LOOP_MODEL}@champion",
                            window=f"{span:.3f}s",
                            now=datetime.fromtimestamp(clock.ms / 1000, UTC),
                        )
                        timings["monitoring"] += time.perf_counter() - t
                        monitored_from, last_month = clock.ms / 1000, month_now
                    if not is_last:
                        t = time.perf_counter()
                        controller.tick()
                        tick_s = time.perf_counter() - t
                        timings["ticks"] += tick_s
                        timings["longest_tick"] = max(timings["longest_tick"], tick_s)
                        try:
                            routing = link.routing(LOOP_MODEL)
                        except ServiceUnavailable:
                            routing = {}
                        canary_days[-1]["routing_share"] = (
                            float(routing.get("share") or 0.0)
                            if routing.get("mode") == "canary"
                            else 0.0
                        )
                    next_at = week_at + len(week) * day_seconds + week_pause_seconds
                    slip += max(0.0, time.time() - next_at)
                    week_at = max(next_at, time.time())
            finally:
                http_.close()
        events = client.store.list_loop_events(LOOP_MODEL)
    finally:
        client.close()

    traffic = traffic.assign(
        loop_proba=answered["proba"],
        version=answered["version"],
        static_proba=static_p,
    )
    by_month: dict[str, dict[int, float]] = {k: {} for k in ("sa", "la", "sb", "lb")}
    champions: dict[int, list[int]] = {}
    for m, part in traffic.groupby("month"):
        ok = part[np.isfinite(part["loop_proba"])]
        sa, sb = _scores(part["delayed"], part["static_proba"])
        la, lb = _scores(ok["delayed"], ok["loop_proba"])
        for key, value in (("sa", sa), ("sb", sb), ("la", la), ("lb", lb)):
            if value is not None:
                by_month[key][int(m)] = round(value, 5)
        champions[int(m)] = sorted(int(v) for v in ok["version"].unique())
    event_rows = [_event_row(e, day_starts, days) for e in events]
    kinds = [e.kind for e in events]
    common = sorted(set(by_month["sa"]) & set(by_month["la"]))
    gaps = [by_month["sa"][m] - by_month["la"][m] for m in common]
    out = LoopDemoResult(
        months=months,
        rows_per_month=rows_per_month,
        seed=seed,
        day_seconds=day_seconds,
        week_pause_seconds=week_pause_seconds,
        sim_day_wall_s=round(sim_day, 4),
        static_auc_by_month=by_month["sa"],
        loop_auc_by_month=by_month["la"],
        static_brier_by_month=by_month["sb"],
        loop_brier_by_month=by_month["lb"],
        static_auc_mean=_mean(by_month["sa"]),
        loop_auc_mean=_mean(by_month["la"]),
        static_brier_mean=_mean(by_month["sb"]),
        loop_brier_mean=_mean(by_month["lb"]),
        worst_auc_gap=round(max(gaps), 5) if gaps else 0.0,
        retrains=sum(1 for e in events if e.kind == "retrain" and "version" in e.evidence),
        promotions=kinds.count("promote"),
        rollbacks=kinds.count("rollback"),
        served_rows=int(np.isfinite(answered["proba"]).sum()),
        failed_requests=failed,
        champion_by_month=champions,
        canary_share_by_day=canary_days,
        events=event_rows,
        slip_s=round(slip, 2),
        timings_s={k: round(v, 2) for k, v in timings.items()},
        wall_s=round(time.perf_counter() - started, 1),
        workdir=str(folder),
        policy=policy_text,
    )
    if page is not None:
        from dataclasses import replace

        from modelloop.demo._loop_page import loop_demo_page

        Path(page).write_text(loop_demo_page(out), encoding="utf-8")
        out = replace(out, page=str(page))
    return out


def _send_labels(http_: _Http, labels: list[tuple[str, int]]) -> None:
    bodies = [
        {"labels": [{"request_id": r, "label": y} for r, y in labels[i : i + 1000]]}
        for i in range(0, len(labels), 1000)
    ]
    for status, reply in http_.post_all(f"/v1/models/{LOOP_MODEL}/feedback", bodies):
        if status != 200:
            raise ServiceUnavailable(f"the demo's server refused labels ({status}): {reply}")


def _mean(values: dict[int, float]) -> float:
    return round(sum(values.values()) / len(values), 5) if values else float("nan")


def _event_row(event: LoopEvent, day_starts: list[float], days: list[Any]) -> dict[str, Any]:
    """A loop event with the simulated date it happened on."""
    from modelloop.loop._notify import event_dict

    i = bisect.bisect_right(day_starts, event.timestamp / 1000) - 1
    date = str(days[i])[:10] if 0 <= i < len(days) else "before March"
    return {"date": date, **event_dict(event)}
