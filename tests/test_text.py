"""Errors shortened for one line keep what caused them."""

from __future__ import annotations

from modelloop._text import brief


def _chained() -> BaseException:
    try:
        try:
            raise TypeError("Expected an int, got a boolean")
        except TypeError as inner:
            raise RuntimeError("conversion of node 'x' failed: " + "context " * 200) from inner
    except RuntimeError as outer:
        return outer


def test_brief_keeps_the_root_cause_of_a_long_chained_error() -> None:
    text = brief(_chained(), limit=300)
    assert len(text) <= 300
    assert text.startswith("RuntimeError: conversion of node 'x' failed")
    assert text.endswith("(caused by TypeError: Expected an int, got a boolean)")


def test_brief_keeps_the_end_of_a_long_message() -> None:
    e = ValueError("start " + "x" * 5000 + " the actual reason")
    text = brief(e, limit=200)
    assert len(text) <= 200 and text.startswith("ValueError: start")
    assert text.endswith("the actual reason") and " ... " in text


def test_brief_of_a_short_error_is_the_type_and_message_on_one_line() -> None:
    assert brief(RuntimeError("two\nlines")) == "RuntimeError: two lines"
    assert brief(ValueError()) == "ValueError"
    assert brief(ValueError("bad value"), with_type=False) == "bad value"
