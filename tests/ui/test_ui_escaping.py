"""User text is shown as text on every page: a run named like an HTML image with an onerror
handler, a param holding a script and a tag holding markup never become elements, and no
dialog opens (the ``watched`` fixture fails the test on any dialog or console error)."""

from __future__ import annotations

from ui_support import XSS_NAME, XSS_PARAM, Filled, UiServer, Watched, wait_for_charts


def _no_injected_elements(page: object) -> None:
    # nothing from the store became markup: no <img>, no <b>, and only our own scripts
    assert page.locator("main img").count() == 0  # type: ignore[attr-defined]
    assert page.locator("main b:has-text('bold')").count() == 0  # type: ignore[attr-defined]
    sources = page.evaluate(  # type: ignore[attr-defined]
        "() => [...document.scripts].map(s => s.src ? new URL(s.src).pathname : s.type)"
    )
    assert set(sources) <= {
        "/static/ui.js",
        "/static/charts.js",
        "/static/plotly.min.js",
        "application/json",
    }


def test_runs_table_shows_html_names_as_text(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{ui.url}/experiments/{filled.experiment_id}")
    cell = page.locator(f'tr[data-run-id="{filled.xss_run}"] td.run-name')
    assert cell.inner_text() == XSS_NAME
    page.click("#column-chooser summary")
    page.check('#columns-form input[type=checkbox][value="params.note"]')
    page.check('#columns-form input[type=checkbox][value="tags.owner"]')
    page.click("#apply-columns")
    page.wait_for_url("**col=*")
    row = page.locator(f'tr[data-run-id="{filled.xss_run}"]')
    assert XSS_PARAM in row.inner_text() and "<b>bold</b>" in row.inner_text()
    _no_injected_elements(page)
    watched.shot("runs-escaped")
    assert watched.dialogs == []


def test_run_and_compare_pages_show_html_as_text(
    ui: UiServer, filled: Filled, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{ui.url}/runs/{filled.xss_run}")
    wait_for_charts(page)
    assert page.locator("#run-name").inner_text() == XSS_NAME
    assert page.locator("title").inner_text() == f"Run {XSS_NAME} · modelloop"
    assert XSS_PARAM in page.locator("#params").inner_text()
    assert "<b>bold</b>" in page.locator("#tags").inner_text()
    _no_injected_elements(page)
    watched.shot("run-escaped")

    page.goto(f"{ui.url}/compare?run={filled.xss_run}&run={filled.model_run}")
    wait_for_charts(page)
    assert XSS_NAME in page.locator("#compare-params thead").inner_text()
    assert XSS_PARAM in page.locator("#compare-params").inner_text()
    # the run name also reaches the charts through embedded JSON: still text there
    names = page.evaluate(
        "() => document.querySelector('.chart[data-metric=\"auc\"]').data.map(t => t.name)"
    )
    assert XSS_NAME in names
    _no_injected_elements(page)
    watched.shot("compare-escaped")
    assert watched.dialogs == []
