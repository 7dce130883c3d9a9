"""How fast this machine runs plain Python, for reading a benchmark's figures beside figures
taken on another day or machine (a shared machine's speed drifts).

``python_loop_10m_s()`` is the best of three timings of a 10,000,000-step ``for`` loop adding
integers: a figure in requests per second taken where this is 1.2 s compares with one taken where
it is 0.6 s as half against whole.
"""

from __future__ import annotations

import time


def python_loop_10m_s() -> float:
    """The best of three timings, in seconds, of a pure-Python 10,000,000-step loop."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


if __name__ == "__main__":
    print(python_loop_10m_s())
