"""The runs table driven by typing and clicking in Chromium; every table shown is checked
against ``search_runs`` on the same store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from ui_support import EXPERIMENT, Filled, UiServer, Watched, wait_for_charts


@pytest.fixture(scope="module")
def client(filled: Filled) -> Iterator[Any]:
    from modelloop._client import Client
    from modelloop._config import Settings

    c = Client(Settings(home=filled.home))
    yield c
    c.close()


def _expected(
    client: Any,
    *,
    filter: str = "",
    order_by: Sequence[str] = (),
    size: int = 50,
    token: str | None = None,
) -> tuple[list[str], str | None]:
    page = client.search_runs(
        EXPERIMENT, filter=filter, order_by=order_by, max_results=size, page_token=token
    )
    return [r.run_id for r in page], page.next_page_token


def _shown(page: Any) -> list[str]:
    return [
        str(row.get_attribute("data-run-id"))
        for row in page.locator("#runs tbody tr[data-run-id]").all()
    ]


def _query(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_filter_sort_and_shared_url(
    ui: UiServer, filled: Filled, watched: Watched, client: Any, browser: Any
) -> None:
    page = watched.page
    page.goto(f"{ui.url}/experiments/{filled.experiment_id}")
    assert _shown(page) == _expected(client)[0]
    assert len(_shown(page)) == len(filled.sweep_runs) + 3

    flt = "metrics.auc > 0.8 and params.penalty = 'l2'"
    page.fill("#filter", flt)
    page.press("#filter", "Enter")
    page.wait_for_url("**filter=*")
    want = _expected(client, filter=flt)[0]
    assert 0 < len(want) < len(filled.sweep_runs)
    assert _shown(page) == want

    page.click('th a.sort[data-sort="metrics.auc"]')
    page.wait_for_url("**sort=metrics.auc*")
    assert _shown(page) == _expected(client, filter=flt, order_by=["metrics.auc DESC"])[0]
    page.click('th a.sort[data-sort="metrics.auc"]')  # again: ascending
    page.wait_for_url("**dir=asc*")
    ascending = _expected(client, filter=flt, order_by=["metrics.auc ASC"])[0]
    assert _shown(page) == ascending
    assert page.input_value("#filter") == flt

    page.click('th a.sort[data-sort="name"]')
    page.wait_for_url("**sort=name*")
    assert _shown(page) == _expected(client, filter=flt, order_by=["attributes.run_name DESC"])[0]
    page.click('th a.sort[data-sort="metrics.auc"]')
    page.click('th a.sort[data-sort="metrics.auc"]')
    page.wait_for_url("**dir=asc*")

    # the address bar is enough to show the same table to someone else
    other = browser.new_context().new_page()
    try:
        other.goto(page.url)
        assert _shown(other) == ascending
        assert other.input_value("#filter") == flt
    finally:
        other.context.close()


def test_a_bad_filter_is_explained_next_to_the_box(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{ui.url}/experiments/{filled.experiment_id}")
    page.fill("#filter", "metrics.auc >> 3")
    page.press("#filter", "Enter")
    page.wait_for_url("**filter=*")
    message = page.locator("#filter-error").inner_text()
    assert "metrics.auc >> 3" in message or "'>'" in message or "position" in message
    assert page.locator("#no-runs").count() == 1
    assert len(watched.failed_requests) == 1 and "HTTP 400" in watched.failed_requests[0]
    watched.failed_requests.clear()
    watched.console_errors.clear()


def test_column_chooser_keeps_filter_and_sort(
    ui: UiServer, filled: Filled, watched: Watched, client: Any
) -> None:
    page = watched.page
    flt = "params.penalty = 'l1'"
    page.goto(f"{ui.url}/experiments/{filled.experiment_id}")
    page.fill("#filter", flt)
    page.press("#filter", "Enter")
    page.wait_for_url("**filter=*")
    page.click('th a.sort[data-sort="metrics.loss"]')
    page.wait_for_url("**sort=*")
    page.click("#column-chooser summary")
    for box in page.locator("#columns-form input[type=checkbox]").all():
        box.uncheck()
    page.check('#columns-form input[type=checkbox][value="params.C"]')
    page.check('#columns-form input[type=checkbox][value="metrics.loss"]')
    page.click("#apply-columns")
    page.wait_for_url("**col=*")
    headers = page.locator("#runs thead th").all_inner_texts()
    assert [h.strip(" ▲▼") for h in headers[5:]] == ["metrics.loss", "params.C"]
    query = _query(page)
    assert query["filter"] == [flt] and query["sort"] == ["metrics.loss"]
    assert query["col"] == ["metrics.loss", "params.C"]
    want = client.search_runs(EXPERIMENT, filter=flt, order_by=["metrics.loss DESC"]).items
    assert _shown(page) == [r.run_id for r in want]
    cells = page.locator("#runs tbody tr[data-run-id] td:nth-child(7)").all_inner_texts()
    assert cells == [r.params["C"] for r in want]


def test_pages_follow_the_store_tokens(
    ui: UiServer, filled: Filled, watched: Watched, client: Any
) -> None:
    page = watched.page
    page.goto(f"{ui.url}/experiments/{filled.experiment_id}?sort=metrics.auc&dir=desc")
    page.select_option("#page-size", label="25")
    page.wait_for_url("**n=25*")
    order = ["metrics.auc DESC"]
    first, token = _expected(client, order_by=order, size=25)
    assert token is not None and _shown(page) == first
    page.click("#next-page")
    page.wait_for_url("**page=*")
    second, last = _expected(client, order_by=order, size=25, token=token)
    assert last is None and _shown(page) == second
    assert len(first) + len(second) == len(filled.sweep_runs) + 3
    assert not set(first) & set(second)
    assert page.locator("#next-page").count() == 0
    page.click("#prev-page")
    page.wait_for_url(lambda url: "page=" not in url)
    assert _shown(page) == first


def test_compare_selected_runs(ui: UiServer, filled: Filled, watched: Watched, client: Any) -> None:
    page = watched.page
    page.goto(f"{ui.url}/experiments/{filled.experiment_id}")
    assert page.is_disabled("#compare-button")
    chosen = [filled.sweep_runs[0], filled.sweep_runs[1], filled.model_run]
    for run_id in chosen:
        page.check(f'tr[data-run-id="{run_id}"] input.pick')
    assert page.locator("#selected-count").inner_text() == "3 selected"
    page.click("#compare-button")
    page.wait_for_url("**/compare?*")
    wait_for_charts(page)
    assert sorted(_query(page)["run"]) == sorted(chosen)
    runs = [client.get_run(r) for r in chosen]
    shown_order = [
        str(a.get_attribute("href")).rsplit("/", 1)[-1]
        for a in page.locator("#compare-params thead th a").all()
    ]
    runs.sort(key=lambda r: shown_order.index(r.run_id))
    keys = sorted({k for r in runs for k in r.params})
    differs = {k for k in keys if len({r.params.get(k) for r in runs}) > 1}
    rows = page.locator("#compare-params tbody tr")
    assert rows.count() == len(keys)
    marked = {
        str(row.get_attribute("data-key"))
        for row in rows.all()
        if row.get_attribute("class") == "diff"
    }
    assert marked == differs and "C" in differs
    # overlaid curves: one trace per run on the loss chart (the model run logs no loss: empty)
    names = page.evaluate(
        "() => document.querySelector('.chart[data-metric=\"loss\"]').data.map(t => t.name)"
    )
    assert names == [r.name for r in runs]
    lengths = page.evaluate(
        "() => document.querySelector('.chart[data-metric=\"loss\"]').data.map(t => t.x.length)"
    )
    assert lengths == [len(client.get_metric_history(r.run_id, "loss")) for r in runs]
    assert page.locator("#parcoords").get_attribute("data-loaded") == "true"
    # parallel coordinates: one line per run over params.C then the chosen metric (auc),
    # each axis scaled to its range, so the best auc ends at the top
    lines = page.evaluate("() => document.querySelector('#parcoords').data.map(t => [t.name, t.y])")
    assert [name for name, _ in lines] == [r.name for r in runs]
    best = max(runs, key=lambda r: r.metrics["auc"])
    assert dict((n, y[-1]) for n, y in lines)[best.name] == 1
    axes = page.evaluate("() => document.querySelector('#parcoords').layout.xaxis.ticktext")
    assert axes == ["params.C", "metrics.auc"]
    watched.shot("compare-3")
