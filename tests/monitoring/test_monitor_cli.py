"""``modelloop monitor`` as a script or a CI step sees it: wrong options refused together before
any work, an opt-in exit code while alerts fire, webhook failures explained, and a history page
that lists drifted columns and alerts."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

from modelloop.cli import app
from modelloop.cli._monitor import ALERT_EXIT_CODE

MODEL = "cancer"  # the model of the two_versions fixture (conftest.py)


def test_wrong_options_are_refused_together_before_any_work(two_versions) -> None:
    client, _, _ = two_versions
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            *("monitor", "run", MODEL, "-w", "2h"),
            *("--alert-metric", "acc<0.9", "--alert-metric", "accuracy<<1"),
            *("--alert-metric", "auc<1.2.3", "--every", "soon", "--webhook", "ftp://nowhere"),
            *("--alert-drift-share", "2"),
        ],
    )
    assert res.exit_code == 2, res.output
    err = " ".join(res.stderr.split())  # the console wraps long messages
    for wrong in ("'acc<0.9'", "'accuracy<<1'", "'auc<1.2.3'", "--every", "--webhook", "share"):
        assert wrong in err
    assert "accuracy, f1, auc, mae, rmse" in err  # the known metrics are named
    assert client.store.list_monitoring_results(MODEL) == []  # nothing was computed or stored

    # a known metric of the other task would stay silent forever: refused too, before any work
    res = runner.invoke(app, ["monitor", "run", MODEL, "-w", "2h", "--alert-metric", "mae>5"])
    assert res.exit_code == 2 and "classification" in res.stderr and "mae" in res.stderr
    assert client.store.list_monitoring_results(MODEL) == []


def test_fail_on_alert_gives_its_own_exit_code(two_versions) -> None:
    client, _, _ = two_versions
    runner = CliRunner()
    firing = ["monitor", "run", MODEL, "-w", "2h", "--alert-metric", "accuracy<1.01", "--json"]
    res = runner.invoke(app, firing)
    assert res.exit_code == 0, res.output  # without the flag an alert is no failure
    res = runner.invoke(app, [*firing, "--fail-on-alert"])
    assert res.exit_code == ALERT_EXIT_CODE == 10
    assert json.loads(res.stdout)["result_id"]  # the results were still printed
    assert "accuracy_below_1.01" in res.stderr
    quiet = [
        *("monitor", "run", MODEL, "-w", "2h", "--alert-metric", "accuracy<0.01"),
        *("--alert-drift-share", "1", "--no-alert-quality", "--fail-on-alert"),
    ]
    res = runner.invoke(app, quiet)
    assert res.exit_code == 0, res.output
    assert len(client.store.list_monitoring_results(MODEL)) == 3


class _Failing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503, "Busy")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_failing_webhook_says_why_without_hiding_the_results(two_versions) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    runner = CliRunner()
    try:
        res = runner.invoke(
            app,
            [
                *("monitor", "run", MODEL, "-w", "2h", "--alert-metric", "accuracy<1.01"),
                *("--webhook", f"http://127.0.0.1:{server.server_address[1]}/hook"),
                *("--webhook", f"http://127.0.0.1:{closed}/hook", "--json"),
            ],
        )
    finally:
        server.shutdown()
    assert res.exit_code == 0, res.output
    assert "accuracy_below_1.01" in {a["rule"] for a in json.loads(res.stdout)["alerts"]}
    err = " ".join(res.stderr.split())
    assert "HTTP 503 Busy" in err and "after 4 tries" in err
    assert "connection failed" in err and f":{closed}/hook" in err


def test_history_page_lists_versions_drifted_columns_and_alerts(two_versions, tmp_path) -> None:
    runner = CliRunner()
    for _ in range(2):
        res = runner.invoke(
            app, ["monitor", "run", MODEL, "-w", "2h", "--alert-metric", "accuracy<1.01"]
        )
        assert res.exit_code == 0, res.output
    out = tmp_path / "history.html"
    res = runner.invoke(app, ["monitor", "history", MODEL, "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert get_plotlyjs() in page  # self-contained: plotly.js inlined, nothing fetched
    assert re.search(r"<script[^>]*\bsrc\s*=", page) is None
    alerts = page.split("<h2>Alerts, newest first</h2>")[1].split("</table>")[0]
    assert "<td>accuracy_below_1.01</td><td>firing</td>" in alerts
    runs = page.split("<h2>Runs, newest first</h2>")[1].split("</table>")[0]
    assert runs.count("<td>v1 (400), v2 (169)</td>") == 2
    stored = json.loads(runner.invoke(app, ["monitor", "history", MODEL, "--json"]).stdout)
    drifted = stored["results"][-1]["drifted_columns"]
    assert f"<td>{', '.join(drifted) or 'none'}</td>" in runs


def test_report_explains_its_statistics(two_versions, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["monitor", "report", MODEL, "-w", "2h", "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    # the default minimum-effect tests: p-values corrected, and the rule explained
    assert "<th>p-value (benjamini-hochberg)</th>" in page
    assert "<th>lower bound</th><th>negligible effect</th>" in page
    assert "largest vertical gap between the reference and current ECDFs" in page
    assert "Total variation distance beyond a negligible effect" in page


def test_data_and_labels_as_s3_urls_are_read_there(two_versions, s3_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    from s3_support import BUCKET

    client, _, _ = two_versions
    home = Path(client.settings.home)
    logged = pd.concat(pd.read_parquet(f) for f in (home / "predictions" / MODEL).glob("*.parquet"))
    labels = pd.concat(pd.read_parquet(f) for f in (home / "feedback" / MODEL).glob("*.parquet"))
    s3 = s3_server.client()
    for key, frame in (("window/data.parquet", logged), ("window/labels.parquet", labels)):
        s3.put_object(Bucket=BUCKET, Key=key, Body=frame.to_parquet(index=False))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    res = CliRunner().invoke(
        app,
        [
            *("monitor", "run", MODEL, "--json"),
            *("--data", f"s3://{BUCKET}/window/data.parquet"),
            *("--labels", f"s3://{BUCKET}/window/labels.parquet"),
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"] == len(logged) == 569
    assert sum(v["labelled"] for v in out["versions"]) == 569  # labels read from S3 too
    missing = CliRunner().invoke(
        app, ["monitor", "run", MODEL, "--data", f"s3://{BUCKET}/window/nope.parquet"]
    )
    assert missing.exit_code == 3 and f"s3://{BUCKET}/window/nope.parquet" in missing.stderr
