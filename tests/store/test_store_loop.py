"""The loop controller's state, lease and events, on every backend."""

from __future__ import annotations

import pytest

from modelloop.exceptions import Conflict, InvalidInput
from modelloop.store import LoopLease, LoopState
from modelloop.store._sql import SqlStore


def test_a_state_moves_only_by_compare_and_set_with_its_event(store: SqlStore) -> None:
    assert store.get_loop_state("m") is None
    s1, e1 = store.transition_loop(
        "m",
        expected_revision=0,
        state="retraining",
        data={"trigger": "drift"},
        kind="trigger",
        message="drift share 0.6 >= 0.5",
        evidence={"share": 0.6},
        now=1000,
    )
    assert (s1.state, s1.revision, dict(s1.data), s1.updated_at) == (
        "retraining",
        1,
        {"trigger": "drift"},
        1000,
    )
    assert (e1.kind, e1.state, dict(e1.evidence), e1.timestamp) == (
        "trigger",
        "retraining",
        {"share": 0.6},
        1000,
    )
    with pytest.raises(Conflict, match="expected revision 0, found revision 1"):
        store.transition_loop(
            "m", expected_revision=0, state="idle", data={}, kind="x", message="stale"
        )
    with pytest.raises(Conflict, match="expected revision 5"):
        store.transition_loop(
            "m", expected_revision=5, state="idle", data={}, kind="x", message="stale"
        )
    s2, _ = store.transition_loop(
        "m",
        expected_revision=1,
        state="gated",
        data={"challenger": 2, "auc": float("nan")},
        kind="gate",
        message="passed",
    )
    assert s2.revision == 2 and dict(s2.data) == {"challenger": 2, "auc": None}
    assert store.get_loop_state("m") == s2
    assert [e.kind for e in store.list_loop_events("m")] == [
        "trigger",
        "gate",
    ]  # none of the refused
    assert store.list_loop_states() == [s2]


def test_racing_transitions_apply_once(store: SqlStore, in_threads) -> None:  # type: ignore[no-untyped-def]
    store.transition_loop("m", expected_revision=0, state="idle", data={}, kind="x", message="")
    outcomes = in_threads(
        lambda i: store.transition_loop(
            "m",
            expected_revision=1,
            state="promoted",
            data={"by": i},
            kind="promote",
            message=f"by {i}",
        ),
        range(6),
    )
    wins = [o for o in outcomes if isinstance(o, tuple)]
    assert len(wins) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o not in wins)
    assert store.get_loop_state("m").revision == 2  # type: ignore[union-attr]
    assert [e.kind for e in store.list_loop_events("m")].count("promote") == 1


def test_first_transitions_racing_create_one_state(store: SqlStore, in_threads) -> None:  # type: ignore[no-untyped-def]
    outcomes = in_threads(
        lambda i: store.transition_loop(
            "m", expected_revision=0, state="idle", data={"by": i}, kind="start", message=""
        ),
        range(5),
    )
    assert sum(isinstance(o, tuple) for o in outcomes) == 1
    assert len(store.list_loop_events("m")) == 1


def test_the_lease_has_one_holder_until_it_expires(store: SqlStore) -> None:
    a = store.acquire_loop_lease("m", "ctl-a", ttl_ms=10_000, now=1_000)
    assert a == LoopLease("m", "ctl-a", 1_000, 11_000)
    b = store.acquire_loop_lease("m", "ctl-b", ttl_ms=10_000, now=5_000)
    assert b == a  # still a's: b is told who holds it
    renewed = store.acquire_loop_lease("m", "ctl-a", ttl_ms=10_000, now=9_000)
    assert renewed == LoopLease("m", "ctl-a", 1_000, 19_000)  # renewal keeps acquired_at
    taken = store.acquire_loop_lease("m", "ctl-b", ttl_ms=10_000, now=19_000)
    assert taken == LoopLease("m", "ctl-b", 19_000, 29_000)  # expired: b takes it
    assert store.release_loop_lease("m", "ctl-a") is False
    assert store.release_loop_lease("m", "ctl-b") is True
    assert store.acquire_loop_lease("m", "ctl-a", ttl_ms=5, now=20_000).holder == "ctl-a"


def test_racing_controllers_get_one_lease(store: SqlStore, in_threads) -> None:  # type: ignore[no-untyped-def]
    outcomes = in_threads(
        lambda i: store.acquire_loop_lease("m", f"ctl-{i}", ttl_ms=60_000), range(6)
    )
    holders = {o.holder for o in outcomes}  # type: ignore[union-attr]
    assert len(holders) == 1


def test_a_transition_by_a_controller_without_the_lease_is_refused(store: SqlStore) -> None:
    store.acquire_loop_lease("m", "ctl-a", ttl_ms=10_000, now=1_000)
    with pytest.raises(Conflict, match="held by 'ctl-a'"):
        store.transition_loop(
            "m",
            expected_revision=0,
            state="idle",
            data={},
            kind="x",
            message="",
            holder="ctl-b",
            now=2_000,
        )
    with pytest.raises(Conflict, match="not leased to 'ctl-a'"):  # expired
        store.transition_loop(
            "m",
            expected_revision=0,
            state="idle",
            data={},
            kind="x",
            message="",
            holder="ctl-a",
            now=11_000,
        )
    state, _ = store.transition_loop(
        "m",
        expected_revision=0,
        state="idle",
        data={},
        kind="x",
        message="",
        holder="ctl-a",
        now=2_000,
    )
    assert isinstance(state, LoopState) and store.list_loop_events("m")[0].kind == "x"
    assert (state.state, state.revision, state.updated_at) == ("idle", 1, 2_000)


def test_events_page_and_check_their_input(store: SqlStore) -> None:
    for i in range(5):
        store.add_loop_event("m", kind="wait", state="canary", message=f"w{i}", now=i)
    store.add_loop_event("other", kind="wait", state="idle", message="x")
    events = store.list_loop_events("m")
    assert [e.message for e in events] == ["w0", "w1", "w2", "w3", "w4"]
    assert [e.message for e in store.list_loop_events("m", limit=2)] == ["w3", "w4"]
    after = store.list_loop_events("m", after_id=events[2].event_id)
    assert [e.message for e in after] == ["w3", "w4"]
    with pytest.raises(InvalidInput, match="cannot be stored as JSON"):
        store.add_loop_event("m", kind="x", state="idle", message="", evidence={"o": object()})
    with pytest.raises(InvalidInput, match="event kind"):
        store.add_loop_event("m", kind="", state="idle", message="")
    with pytest.raises(InvalidInput, match="expected revision"):
        store.transition_loop("m", expected_revision=-1, state="i", data={}, kind="k", message="")
