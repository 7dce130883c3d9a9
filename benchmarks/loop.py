"""The loop demo's replay as a benchmark: March-December 2013 through a real server with the
controller on, against the January-February champion left alone; prints one JSON line.

Runs the same function as ``modelloop demo loop`` in a fresh folder and reports mean AUC and
Brier score of both, per month, the worst month's AUC gap (static minus looped), retrains,
promotions, rollbacks, the wall time of the whole replay and whether the goals hold: never worse
than static by more than 0.005 AUC in any month, a better mean Brier score, 5 minutes at most.

Usage: python benchmarks/loop.py [--rows 4000] [--seed 0] [--day-seconds 0.2] [--page PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000, help="flights sampled per month")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--day-seconds", type=float, default=0.2)
    parser.add_argument("--months", default="3-12", help="e.g. 3-12 or 3,4")
    parser.add_argument("--page", default=None, help="also write the HTML page here")
    args = parser.parse_args()

    from modelloop.cli._demo import _months
    from modelloop.demo import run_loop_demo

    with tempfile.TemporaryDirectory(prefix="modelloop-bench-loop-") as tmp:
        result = run_loop_demo(
            Path(tmp) / "demo",
            months=_months(args.months, ranges=True),
            rows_per_month=args.rows,
            seed=args.seed,
            day_seconds=args.day_seconds,
            page=args.page,
        )
    goals = {
        "auc_never_worse_by_0.005": result.worst_auc_gap <= 0.005,
        "better_mean_brier": result.loop_brier_mean < result.static_brier_mean,
        "within_5_minutes": result.wall_s <= 300,
    }
    print(
        json.dumps(
            {
                "benchmark": "loop",
                "months": result.months,
                "rows_per_month": result.rows_per_month,
                "sample_seed": result.seed,
                "static_auc_by_month": result.static_auc_by_month,
                "loop_auc_by_month": result.loop_auc_by_month,
                "static_brier_by_month": result.static_brier_by_month,
                "loop_brier_by_month": result.loop_brier_by_month,
                "static_auc_mean": result.static_auc_mean,
                "loop_auc_mean": result.loop_auc_mean,
                "static_brier_mean": result.static_brier_mean,
                "loop_brier_mean": result.loop_brier_mean,
                "worst_auc_gap": result.worst_auc_gap,
                "retrains": result.retrains,
                "promotions": result.promotions,
                "rollbacks": result.rollbacks,
                "champion_by_month": result.champion_by_month,
                "served_rows": result.served_rows,
                "failed_requests": result.failed_requests,
                "sim_day_wall_s": result.sim_day_wall_s,
                "slip_s": result.slip_s,
                "timings_s": result.timings_s,
                "wall_s": result.wall_s,
                "goals": goals,
            }
        )
    )


if __name__ == "__main__":
    main()
