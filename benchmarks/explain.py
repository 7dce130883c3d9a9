"""Per-row explanations of the flights model, exact and estimated; prints one JSON line.

Trains the flights example's model (January 1 - February 14, 2013) and explains the example's
300 test rows (February 15-28, background of 20 rows) as the pipeline does: exact Shapley values
over all 2^7 sets of columns. Then the permutation estimate on the same rows and background, with
one antithetic pair of orders per row (what the pipeline used before exact values) and with the
default pairs, each compared with the exact values: mean relative error of a row's
contributions (sum of absolute differences over sum of absolute exact values), the share of
non-negligible values (above 1% of the row's largest) whose sign is wrong, and the standard
error the estimate states.

Usage: python benchmarks/explain.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np


def _compare(estimate: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    rel = np.abs(estimate - exact).sum(axis=1) / np.abs(exact).sum(axis=1)
    big = np.abs(exact) > 0.01 * np.abs(exact).max(axis=1, keepdims=True)
    flips = (np.sign(estimate) != np.sign(exact)) & big
    return {
        "mean_relative_error": float(rel.mean()),
        "sign_flips_share": float(flips.sum() / big.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300, help="rows explained (default: 300)")
    args = parser.parse_args()

    from modelloop.data import FLIGHTS_FEATURES, load_flights
    from modelloop.demo._quickstart import build_model
    from modelloop.pipeline._explain import (
        PERMUTATION_PAIRS,
        _output_fn,
        _shap_values,
        exact_shapley_values,
    )

    flights = load_flights([1, 2])
    features = list(FLIGHTS_FEATURES)
    train = flights[flights["date"] < "2013-02-15"]
    test = flights[flights["date"] >= "2013-02-15"]
    model = build_model().fit(train[features], train["delayed"])
    rng = np.random.default_rng(0)
    pos = np.sort(rng.choice(len(test), size=min(args.rows, len(test)), replace=False))
    X = test[features].iloc[pos].reset_index(drop=True)
    background = X.iloc[np.sort(rng.choice(len(X), size=20, replace=False))].reset_index(drop=True)
    f, _ = _output_fn(model, "binary")

    start = time.perf_counter()
    exact, _, _ = exact_shapley_values(f, X, background)
    exact_s = time.perf_counter() - start
    out: dict[str, Any] = {
        "rows": len(X),
        "features": len(features),
        "background_rows": len(background),
        "exact_seconds": round(exact_s, 3),
    }
    for pairs in (1, PERMUTATION_PAIRS):
        start = time.perf_counter()
        phi, _, _, se = _shap_values(f, X, background, np.random.default_rng(1), pairs=pairs)
        seconds = time.perf_counter() - start
        entry = {"seconds": round(seconds, 3), **_compare(phi, exact)}
        if se is not None:
            entry["stated_standard_error_mean"] = float(se.mean())
            entry["observed_abs_error_mean"] = float(np.abs(phi - exact).mean())
        out[f"permutation_{pairs}_pairs"] = entry
    print(json.dumps(out))


if __name__ == "__main__":
    main()
