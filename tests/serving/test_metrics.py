"""ServingMetrics: names, labels and values as Prometheus' text parser reads them."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelloop.serving._metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, ServingMetrics


def scrape(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_requests_counted_by_model_version_route_status() -> None:
    m = ServingMetrics()
    m.request("fraud", "3", "champion", 200, 0.004)
    m.request("fraud", "3", "champion", 200, 0.002)
    m.request("fraud", "4", "canary", 422, 0.001)
    s = scrape(m)
    total = "modelloop_serving_requests_total"
    assert value(s, total, model="fraud", version="3", route="champion", status="200") == 2
    assert value(s, total, model="fraud", version="4", route="canary", status="422") == 1
    hist = "modelloop_serving_request_duration_seconds"
    assert value(s, hist + "_count", model="fraud", route="champion") == 2
    assert value(s, hist + "_sum", model="fraud", route="champion") == pytest.approx(0.006)
    # 0.002 and 0.004 are both under 5 ms, only 0.002 under 2.5 ms; nothing under 0.5 ms
    assert value(s, hist + "_bucket", model="fraud", route="champion", le="0.005") == 2
    assert value(s, hist + "_bucket", model="fraud", route="champion", le="0.0025") == 1
    assert value(s, hist + "_bucket", model="fraud", route="champion", le="0.0005") == 0
    assert value(s, hist + "_bucket", model="fraud", route="champion", le="+Inf") == 2


def test_latency_buckets_span_half_a_millisecond_to_ten_seconds() -> None:
    assert LATENCY_BUCKETS[0] == 0.0005 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    assert tuple(float(2**i) for i in range(11)) == BATCH_SIZE_BUCKETS


def test_batch_size_histogram_uses_powers_of_two() -> None:
    m = ServingMetrics()
    for size in (1, 3, 64, 1000):
        m.batch("fraud", "3", size)
    s = scrape(m)
    name = "modelloop_serving_batch_size_bucket"
    assert value(s, name, model="fraud", version="3", le="1.0") == 1
    assert value(s, name, model="fraud", version="3", le="4.0") == 2
    assert value(s, name, model="fraud", version="3", le="64.0") == 3
    assert value(s, name, model="fraud", version="3", le="512.0") == 3
    assert value(s, name, model="fraud", version="3", le="1024.0") == 4
    assert value(s, "modelloop_serving_batch_size_sum", model="fraud", version="3") == 1068


def test_queue_rejections_and_readiness() -> None:
    m = ServingMetrics()
    s = scrape(m)
    assert value(s, "modelloop_serving_ready") == 0  # not ready until told
    m.queue_depth("fraud", 7)
    m.queue_depth("fraud", 3)
    m.rejected("fraud", "queue_full")
    m.rejected("fraud", "queue_full")
    m.rejected("fraud", "too_large")
    m.ready(True)
    s = scrape(m)
    assert value(s, "modelloop_serving_queue_depth", model="fraud") == 3
    rejected = "modelloop_serving_rejected_requests_total"
    assert value(s, rejected, model="fraud", reason="queue_full") == 2
    assert value(s, rejected, model="fraud", reason="too_large") == 1
    assert value(s, "modelloop_serving_ready") == 1
    m.ready(False)
    assert value(scrape(m), "modelloop_serving_ready") == 0


def test_prediction_log_metrics() -> None:
    m = ServingMetrics()
    m.log_written(100)
    m.log_written(20)
    m.log_error()
    m.log_dropped(5)
    m.log_state(42, 1.5)
    s = scrape(m)
    assert value(s, "modelloop_serving_prediction_log_rows_total") == 120
    assert value(s, "modelloop_serving_prediction_log_errors_total") == 1
    assert value(s, "modelloop_serving_prediction_log_dropped_rows_total") == 5
    assert value(s, "modelloop_serving_prediction_log_pending_rows") == 42
    assert value(s, "modelloop_serving_prediction_log_lag_seconds") == 1.5


def test_model_version_gauge_per_route() -> None:
    m = ServingMetrics()
    m.model_loaded("fraud", "champion", "3")
    m.model_loaded("fraud", "canary", "4")
    m.model_loaded("fraud", "champion", "5")  # an alias moved
    s = scrape(m)
    name = "modelloop_serving_model_version"
    assert value(s, name, model="fraud", route="champion") == 5
    assert value(s, name, model="fraud", route="canary") == 4
    m.model_unloaded("fraud", "canary")
    m.model_loaded("other", "champion", "not-a-number")
    s = scrape(m)
    assert (name, (("model", "fraud"), ("route", "canary"))) not in s
    assert math.isnan(value(s, name, model="other", route="champion"))


def test_each_instance_has_its_own_registry() -> None:
    a, b = ServingMetrics(), ServingMetrics()
    a.request("fraud", "1", "champion", 200, 0.01)
    assert [k for k in scrape(a) if k[0] == "modelloop_serving_requests_total"]
    assert ("modelloop_serving_requests_total", ()) not in scrape(b)
    keys = [k for k in scrape(b) if k[0] == "modelloop_serving_requests_total"]
    assert keys == []
    assert a.registry is not b.registry


def test_help_and_type_lines_follow_conventions() -> None:
    m = ServingMetrics()
    m.request("fraud", "1", "champion", 200, 0.01)
    m.batch("fraud", "1", 2)
    types = {f.name: f.type for f in text_string_to_metric_families(m.render()[0].decode())}
    assert types["modelloop_serving_requests"] == "counter"
    assert types["modelloop_serving_request_duration_seconds"] == "histogram"
    assert types["modelloop_serving_batch_size"] == "histogram"
    assert types["modelloop_serving_queue_depth"] == "gauge"
    assert types["modelloop_serving_prediction_log_rows"] == "counter"
    assert types["modelloop_serving_model_version"] == "gauge"
    assert all(name.startswith("modelloop_serving_") for name in types)
