"""Choose a formulation on the training split's validation datasets, from the matrix.

[10/12] chooses between adapters (generation, scoring, combinations) on datasets the adapter
did not train on and that are not held out: the validation datasets of its instruction data
(``data_card.json``'s ``tasks.validation``, every variant of a dataset on one side). The
training matrix holds every pool entry's repeated-CV score on those variants, so methods that
pick pool entries get an exact regret with no fit:

- ``score``: the adapter's predicted rank deciles of the whole pool, the complementary list
  (``sllmbo.scoring``), what ``recommend --decode score`` answers;
- ``pick``: the pool entries in the order of the probability the adapter names them (one
  forward pass), what ``recommend --decode pick`` answers;
- ``pick-complement``: the adapter's most probable entry, then the entries that best
  complement it on the training variants of its task type (the greedy portfolio continued
  from that first choice): one forward pass, a list built for the best of ``k``;
- ``llm-feedback``: the few-shot pick (``sllmbo tune --sampler llm-feedback``). The
  portfolio's first entries are tried, then each next entry is the untried one the adapter
  names most probably given the scores so far (the variant's own matrix scores of the
  entries tried, and of no other);
- ``portfolio``, ``knn``, ``size-portfolio``, ``feedback`` (``eval/pool_headroom.py``; the
  few-shot baseline, from the nearest training variants' scores on the tried entries),
  ``defaults``: built from the training matrix *without* the validation datasets, so they
  know no more than the adapter does.

``generate`` (``--methods generate``): the adapter's ``recommend`` answers (consensus or greedy)
are not pool entries; each is cross-validated on the variant as the matrix's cells were
(``cv_scorer``: 3 x 3-fold below 2,000 rows) and put on the row's regret scale (0 = the
row's best pool entry, 1 = its median or worse). Those fits cost minutes per variant.

Statistics are over datasets (variants averaged first): mean regret at budgets 1, 2, 3, 5 and
wins/ties/losses with a Wilcoxon signed-rank test against the portfolio.

    python -m sllmbo.eval.validate_adapter --adapter PATH --methods score,pick --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.core.errors import SllmboError
from sllmbo.eval.pool_headroom import best_of, row_regrets, summarize

BUDGETS = (1, 2, 3, 5)
BASELINES = ("defaults", "portfolio", "knn", "size-portfolio", "feedback")
ADAPTER_METHODS = ("score", "pick", "pick-complement", "llm-feedback", "generate")


def validation_datasets(adapter: Path) -> list[str]:
    """The datasets of the adapter's validation split (its copy of the data card)."""
    card_path = adapter / "data_card.json"
    if not card_path.is_file():
        raise SllmboError(f"{adapter} has no data_card.json, so its validation datasets are "
                          "unknown", hint="pass --datasets NAME,NAME (training-split datasets "
                          "the adapter did not train on)")
    tasks = json.loads(card_path.read_text()).get("tasks", {}).get("validation", [])
    return sorted({t.split("@", 1)[0] for t in tasks})


def row_regret(row: Mapping[str, float], value: float) -> float:
    """``value``'s regret on a matrix row (the portfolio's scale: ``(v - best) / (median -
    best)`` clipped to [0, 1]; a failed fit is 1)."""
    from sllmbo.data.pool_select import regret_scale

    finite = np.array([v for v in row.values() if v is not None and math.isfinite(v)])
    if not math.isfinite(value) or finite.size == 0:
        return 1.0
    best, scale = regret_scale(finite)
    if scale <= 0:
        return 0.0
    return float(np.clip((value - best) / scale, 0.0, 1.0))


def check_not_heldout(datasets: Sequence[str]) -> None:
    from sllmbo.data.splits import heldout_match

    held = sorted(d for d in datasets if heldout_match(d))
    if held:
        raise SllmboError(f"validation datasets {held} are held out: they choose nothing",
                          hint="validate on training-split datasets (the adapter's data card "
                          "lists them)")


def baseline_picks(selectors: Any, family: str, train_scores: Any, card: Mapping[str, Any],
                   size: int, observed: Mapping[str, float]) -> dict[str, list[str]]:
    """Config ids of each baseline for one variant, learned from ``train_scores`` only
    (``observed``: the variant's own scores, which ``feedback`` reads for tried entries)."""
    from sllmbo.data.pool_select import knn, portfolio, task_type_of
    from sllmbo.eval.pool_headroom import feedback_picks, size_portfolio

    cards = selectors.cards
    folio = portfolio(cards, train_scores, task_type_of(card), size)
    return {"defaults": [selectors.pools[family].configs[0].id],
            "portfolio": folio,
            "knn": knn(card, cards, train_scores, size),
            "size-portfolio": size_portfolio(card, cards, train_scores, size),
            "feedback": feedback_picks(folio, observed, train_scores, cards,
                                       task_type_of(card), size)}


def score_picks(backend: Any, variant: str, family_name: str, pool: Any, size: int) -> list[str]:
    """The adapter's complementary list of pool ids for a variant (``recommend --decode
    score``)."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.scoring import complementary_order, decile_probabilities

    task = load_task(variant)
    family = get_family(family_name)
    space = family.default_space(task.task_type)
    card = build_card(task, family, EvalSettings())
    ids, configs = [], []
    for entry in pool.configs:
        ids.append(entry.id)
        configs.append({k: entry.config[k] for k in space.names if k in entry.config})
    probs = decile_probabilities(backend, card, space, configs)
    return [ids[i] for i in complementary_order(probs, size)]


def pick_picks(backend: Any, variant: str, family_name: str, pool: Any, size: int) -> list[str]:
    """The pool ids the adapter names most probably for a variant (the first of them is
    ``recommend --decode pick``'s first; its list goes on as ``pick-complement``'s)."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.scoring import pick_probabilities

    card = build_card(load_task(variant), get_family(family_name), EvalSettings())
    probs = pick_probabilities(backend, card, pool)
    return [pool.configs[i].id for i in np.argsort(-probs, kind="stable")[:size]]


def pick_feedback_picks(backend: Any, variant: str, family_name: str, pool: Any, size: int,
                        folio: Sequence[str], observed: Mapping[str, float]) -> list[str]:
    """The few-shot pick's ``size`` tries: the portfolio's first ``FEEDBACK_START`` entries,
    then each the adapter's pick given the ``observed`` scores of the entries tried."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.pool_select import FEEDBACK_START
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.scoring import feedback_pick

    card = build_card(load_task(variant), get_family(family_name), EvalSettings())
    position = {c.id: i for i, c in enumerate(pool.configs)}
    tried = list(folio[:min(FEEDBACK_START, size)])
    while len(tried) < min(size, len(pool)):
        history = [(position[c], observed.get(c)) for c in tried]
        tried.append(pool.configs[feedback_pick(backend, card, pool, history)].id)
    return tried


def generate_regrets(backend: Any, variant: str, family_name: str, row: Mapping[str, float],
                     size: int, decode: str,
                     scorer: Callable[..., dict[str, Any]] | None = None) -> list[float]:
    """Regrets of the adapter's first ``size`` generated answers, each cross-validated."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.matrix import cv_scorer
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.recommend import recommend_with

    scorer = scorer or cv_scorer
    task = load_task(variant)
    family = get_family(family_name)
    space = family.default_space(task.task_type)
    card = build_card(task, family, EvalSettings())
    rec = recommend_with(backend, card, space, size, decode=decode)
    out = []
    for config in rec.configs:
        try:
            value = float(scorer(task, family, config)["score"])
        except Exception:  # a failed fit is the worst regret, as a failed matrix cell
            value = float("nan")
        out.append(row_regret(row, value))
    return out


def validate(backend: Any | None, datasets: Sequence[str], *,
             methods: Sequence[str] = ("score",), decode: str = "consensus",
             families: Sequence[str] | None = None,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Per family: regret per method and budget over the validation ``datasets``; the
    adapter ``methods`` run only with a ``backend``."""
    unknown = sorted(set(methods) - set(ADAPTER_METHODS))
    if unknown:
        raise SllmboError(f"unknown methods {unknown}",
                          hint=f"choose from {', '.join(ADAPTER_METHODS)}")
    from sllmbo.data.pool_select import dataset_of
    from sllmbo.eval.zeroshot_baselines import load_selectors

    check_not_heldout(datasets)
    selectors = load_selectors()
    wanted = set(datasets)
    result: dict[str, Any] = {"datasets": sorted(wanted), "families": {}}
    for family in families or sorted(selectors.pools):
        scores = selectors.scores(family)
        is_val = [dataset_of(v) in wanted for v in scores.index]
        train_scores = scores.loc[[not x for x in is_val]]
        val_variants = [v for v, x in zip(scores.index, is_val, strict=True) if x]
        if not val_variants:
            echo(f"{family}: no whole matrix row of a validation dataset yet; skipped")
            continue
        per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        seconds: dict[str, float] = defaultdict(float)
        size = max(BUDGETS)
        for variant in val_variants:
            card = selectors.cards[variant]
            regret = row_regrets(scores.loc[variant])
            observed = {k: float(v) for k, v in scores.loc[variant].items()}
            picks = baseline_picks(selectors, family, train_scores, card, size, observed)
            pickers = {"score": score_picks, "pick": pick_picks}
            for method in [m for m in methods if m in pickers and backend is not None]:
                start = time.perf_counter()
                picks[method] = pickers[method](backend, variant, family,
                                                selectors.pools[family], size)
                seconds[method] += time.perf_counter() - start
            if backend is not None and "pick-complement" in methods:
                from sllmbo.data.pool_select import portfolio, task_type_of

                start = time.perf_counter()
                first = picks["pick"][0] if "pick" in picks else pick_picks(
                    backend, variant, family, selectors.pools[family], 1)[0]
                picks["pick-complement"] = portfolio(selectors.cards, train_scores,
                                                     task_type_of(card), size, start=[first])
                seconds["pick-complement"] += time.perf_counter() - start
            if backend is not None and "llm-feedback" in methods:
                start = time.perf_counter()
                picks["llm-feedback"] = pick_feedback_picks(
                    backend, variant, family, selectors.pools[family], size,
                    picks["portfolio"], observed)
                seconds["llm-feedback"] += time.perf_counter() - start
            values = {m: [regret.get(i, 1.0) for i in ids] for m, ids in picks.items()}
            if backend is not None and "generate" in methods:
                start = time.perf_counter()
                values["generate"] = generate_regrets(backend, variant, family, observed, size,
                                                      decode)
                seconds["generate"] += time.perf_counter() - start
            for method, vals in values.items():
                for b in BUDGETS:
                    per[dataset_of(variant)][f"{method}@{b}"].append(best_of(vals, b))
            echo(f"{family} {variant}: " + " ".join(
                f"{m}={best_of(v, 1):.2f}" for m, v in values.items()))
        result["families"][family] = {**summarize(per), "variants": len(val_variants),
                                      "seconds": {k: round(v, 1) for k, v in seconds.items()}}
    return result


def print_table(result: Mapping[str, Any]) -> None:
    """Mean regret per method and budget, one block per family."""
    for family, block in result["families"].items():
        means = block["mean_regret"]
        methods = sorted({k.rsplit("@", 1)[0] for k in means})
        print(f"{family}: {block['n_datasets']} datasets, {block['variants']} variants "
              "(mean regret over datasets; 0 = the variant's best pool entry)")
        print("  budget " + " ".join(f"{m:>15s}" for m in methods))
        for b in BUDGETS:
            print(f"  {b:6d} " + " ".join(f"{means.get(f'{m}@{b}', float('nan')):15.3f}"
                                         for m in methods))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default=None,
                        help="adapter folder (its data card names the validation datasets); "
                        "omit to report the baselines only (then --datasets is needed)")
    parser.add_argument("--datasets", default=None, help="comma-separated dataset names")
    parser.add_argument("--backend", default="auto", help="auto, llamacpp or transformers")
    parser.add_argument("--methods", default="score",
                        help="the adapter's methods, comma-separated: score, pick, "
                        "pick-complement, llm-feedback, generate "
                        "(generated answers are cross-validated: slow)")
    parser.add_argument("--decode", default="consensus", choices=("consensus", "greedy"))
    parser.add_argument("--families", default=None, help="comma-separated (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.datasets:
            datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
        elif args.adapter:
            datasets = validation_datasets(Path(args.adapter))
        else:
            raise SllmboError("nothing to validate on", hint="pass --adapter or --datasets")
        backend = None
        if args.adapter:
            from sllmbo.inference.factory import create_backend

            backend = create_backend(args.backend, adapter=args.adapter)
        families = args.families.split(",") if args.families else None
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        result = validate(backend, datasets, methods=methods, decode=args.decode,
                          families=families)
    except SllmboError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
