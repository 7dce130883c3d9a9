"""The runs table's state lives in the URL: it reads back exactly what it writes."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from modelloop.exceptions import InvalidInput
from modelloop.ui._query import Column, TableState


def _read(query: str) -> TableState:
    return TableState.from_query(parse_qsl(query, keep_blank_values=True))


def test_a_state_survives_its_own_url() -> None:
    state = TableState(
        filter="metrics.`val loss` < 1 and params.depth = '6'",
        sort="metrics.val loss",
        descending=False,
        columns=(Column("metrics", "val loss"), Column("params", "depth")),
        size=100,
    )
    again = _read(state.query())
    assert again == state
    assert again.order_by == ["metrics.`val loss` ASC"]


def test_pages_stack_tokens_and_other_changes_start_over() -> None:
    first = TableState(filter="metrics.auc > 0.5")
    second = _read(first.next_query("tok1"))
    assert second.page_token == "tok1" and second.back == ("",)
    third = _read(second.next_query("tok2"))
    assert third.page_token == "tok2" and third.back == ("", "tok1")
    back = _read(third.previous_query() or "")
    assert back.page_token == "tok1" and back.back == ("",)
    assert _read(back.previous_query() or "") == first
    assert first.previous_query() is None
    resorted = _read(third.sort_query("metrics.auc"))  # a new sort starts at the first page
    assert resorted.page_token is None and resorted.back == ()
    assert resorted.filter == first.filter and resorted.order_by == ["metrics.auc DESC"]
    flipped = _read(resorted.sort_query("metrics.auc"))
    assert flipped.order_by == ["metrics.auc ASC"]


def test_attribute_sorts() -> None:
    assert TableState(sort="name", descending=False).order_by == ["attributes.run_name ASC"]
    assert TableState(sort="start").order_by == ["attributes.start_time DESC"]
    assert TableState().order_by == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("n=10", "page size"),
        ("dir=up", "sort direction"),
        ("col=metrics", "column 'metrics'"),
        ("col=attributes.status", "column 'attributes.status'"),
        ("col=params.a`b", "back-quote"),
        ("sort=tags.", "column 'tags.'"),
    ],
)
def test_bad_parameters_are_named(query: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _read(query)
