"""Cost of the access checks of the control plane and the model server; prints one JSON line.

(a) creating a token (scrypt hash + insert), median of 10; (b) the first check of a token by a
store object (scrypt verify + one read), median of 10 fresh store objects; (c) every later check
(one read + SHA-256), median of 2,000; (d) a wrong secret for an id already verified, median of
2,000 (no scrypt is spent on it); (e) appending 2,000 audit events one by one, events/s; (f)
reading one user's newest 100 events out of those, median of 50.

Usage: python benchmarks/access.py [--store-url URL]  (a URL of a database of its own: the
benchmark upgrades its schema and appends audit events, which cannot be deleted)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median_s(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store-url", help="default: a new SQLite file in a temp dir")
    args = parser.parse_args()

    from modelloop.store._sql import SqlStore

    with tempfile.TemporaryDirectory() as tmp:
        url = args.store_url or f"sqlite:///{Path(tmp) / 'access.db'}"
        store = SqlStore(url)
        store.upgrade()
        out: dict[str, object] = {"benchmark": "access", "store": url.split(":")[0]}
        name = f"bench-{time.time_ns()}"
        store.create_user(name, "editor")

        tokens: list[str] = []
        t = _median_s(lambda: tokens.append(store.create_token(name, "bench")[1]), 10)
        out["a_token_create_ms"] = round(t * 1000, 2)

        firsts = []
        for token in tokens:
            fresh = SqlStore(url)
            t0 = time.perf_counter()
            assert fresh.authenticate(token) is not None
            firsts.append(time.perf_counter() - t0)
            fresh.close()
        out["b_first_check_ms"] = round(statistics.median(firsts) * 1000, 2)

        token = tokens[0]
        assert store.authenticate(token) is not None
        cached = _median_s(lambda: store.authenticate(token), 2000)
        out["c_cached_check_us"] = round(cached * 1e6, 1)
        wrong = token[:-2] + ("zz" if not token.endswith("zz") else "yy")
        assert store.authenticate(wrong) is None
        out["d_wrong_secret_check_us"] = round(
            _median_s(lambda: store.authenticate(wrong), 2000) * 1e6, 1
        )

        t0 = time.perf_counter()
        for i in range(2000):
            store.add_audit_event(
                actor=f"user{i % 10}", action="bench.write", entity_type="alias",
                entity_id=f"m{i % 7}@champion", before={"version": i}, after={"version": i + 1},
                route="PUT /api/v1/models/{name}/aliases/{alias}",
            )  # fmt: skip
        out["e_audit_events_per_s"] = round(2000 / (time.perf_counter() - t0), 1)
        out["f_audit_by_user_ms"] = round(
            _median_s(lambda: store.list_audit_events(actor="user3", limit=100), 50) * 1000, 2
        )
        store.close()
    out["python"] = platform.python_version()
    out["platform"] = sys.platform
    print(json.dumps(out))


if __name__ == "__main__":
    main()
