"""Are ``sllmbo recommend``'s answers valid on every held-out task, with and without the adapter?

For each held-out task x model family it asks what ``sllmbo recommend`` asks (the card built
from the task, the family's default space) for ``--n`` candidates in one batch (the first greedy,
the others sampled), once on the base model and once with the adapter, and counts answers that
parse and validate without clipping (``SearchSpace.validate``), answers that needed clipping
into the space, and rejected ones. It also records the greedy configuration per task, so two
models' picks can be compared. Run: ``python -m sllmbo.eval.recommend_validity``; writes
``results/recommend_validity.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sllmbo.core.errors import ConfigError


def check(adapter: str, *, n: int, families: list[str], seed: int = 0) -> dict[str, Any]:
    """Validity counts over held-out tasks x ``families`` for one adapter ("none": base)."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.data.splits import HELDOUT
    from sllmbo.inference import create_backend
    from sllmbo.recommend import build_requests, collect

    backend = create_backend("transformers", adapter=adapter, device="cpu")
    rows, totals = [], {"answers": 0, "valid_as_answered": 0, "clipped": 0, "rejected": 0}
    started = time.perf_counter()
    try:
        for name in HELDOUT:
            task = load_task(name)
            for family_name in families:
                family = get_family(family_name)
                space = family.default_space(task.task_type)
                card = build_card(task, family, EvalSettings(seed=seed))
                requests = build_requests(card, space, n, seed=seed, temperature=0.8,
                                          max_tokens=256)
                completions = backend.complete(requests)
                as_answered = 0
                for c in completions:
                    try:
                        space.validate(c.parse_json())
                        as_answered += 1
                    except (ValueError, ConfigError):
                        pass
                rec = collect(completions, space, len(completions))
                clipped = sum(1 for r in rec.repairs if r)
                totals["answers"] += len(completions)
                totals["valid_as_answered"] += as_answered
                totals["clipped"] += clipped
                totals["rejected"] += len(rec.rejected)
                rows.append({"task": name, "family": family_name, "answers": len(completions),
                             "valid_as_answered": as_answered, "clipped": clipped,
                             "rejected": rec.rejected,
                             "greedy": completions[0].text})
    finally:
        backend.close()
    return {"adapter": adapter, "backend": backend.name, "n": n, "families": families,
            "tasks": len(HELDOUT), "seconds": round(time.perf_counter() - started, 1),
            **totals, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3, help="candidates per task and family")
    parser.add_argument("--families", default="lightgbm,xgboost,random_forest,mlp")
    parser.add_argument("--adapters", default="none,default",
                        help="comma-separated: none (base model), default, or folders")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent /
                        "results" / "recommend_validity.json")
    args = parser.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    results = [check(a.strip(), n=args.n, families=families)
               for a in args.adapters.split(",") if a.strip()]
    for r in results:
        greedy = [row["greedy"] for row in r["rows"]]
        r["distinct_greedy_answers"] = len(set(greedy))
        print(f"{r['backend']}: {r['valid_as_answered']}/{r['answers']} valid as answered, "
              f"{r['clipped']} clipped, {len(r['rows'])} task x family pairs, "
              f"{r['distinct_greedy_answers']} distinct greedy answers, {r['seconds']} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"results": results}, indent=2) + "\n")
    return {"results": results}


if __name__ == "__main__":
    main()
