"""What a reviewable model change costs: the model card and the diff of two versions of the
flights example; prints one JSON line.

Registers two versions of ``examples/flights/modelloop.yaml`` (all of January-February 2013
unless --sample, tuning disabled; the second with learning_rate 0.05, gated against the first) in a
fresh home, then times: the second run's register step (which now writes the card, comparison
included), ``build_card`` alone, ``diff_versions`` (both versions scored on the shared test split,
DeLong and a 1,000-resample paired bootstrap), and the Markdown and HTML renderings.

Usage: python benchmarks/review.py [--sample N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flights" / "modelloop.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="rows sampled (default: all)")
    args = parser.parse_args()

    from modelloop import Client, Settings
    from modelloop.pipeline import Pipeline
    from modelloop.registry._card import build_card
    from modelloop.registry._diff import diff_versions

    base = {"tune.enabled": False, "data.args.sample": args.sample}
    with tempfile.TemporaryDirectory(prefix="modelloop-bench-") as home:
        client = Client(Settings(home=home, user="bench"))
        try:
            first = Pipeline.from_file(EXAMPLE, base).run(client)
            second = Pipeline.from_file(EXAMPLE, {**base, "model.params.learning_rate": 0.05}).run(
                client
            )
            assert second.registered_version == 2, second.reason
            t = time.perf_counter()
            card = build_card(client, "flights-delay", 2)
            card_s = time.perf_counter() - t
            t = time.perf_counter()
            diff = diff_versions(client, ("flights-delay", 1), ("flights-delay", 2))
            diff_s = time.perf_counter() - t
            t = time.perf_counter()
            md, page = card.to_markdown(), card.to_html()
            render_s = time.perf_counter() - t
        finally:
            client.close()
    auc = diff.metric("auc")
    print(
        json.dumps(
            {
                "benchmark": "review",
                "test_rows": diff.test_data["rows"],
                "first_run_s": round(first.seconds, 2),
                "second_run_s": round(second.seconds, 2),
                "register_step_with_card_s": round(second.step("register").seconds, 3),
                "card_s": round(card_s, 3),
                "diff_s": round(diff_s, 3),
                "render_md_and_html_s": round(render_s, 4),
                "card_md_kb": round(len(md) / 1000, 1),
                "card_html_kb": round(len(page) / 1000, 1),
                "auc_delta": round(auc.delta or 0.0, 5),
                "auc_delta_95": [round(auc.low or 0.0, 5), round(auc.high or 0.0, 5)],
            }
        )
    )


if __name__ == "__main__":
    main()
