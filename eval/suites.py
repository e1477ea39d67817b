"""Named evaluation suites: which tasks, families, methods, budgets and seeds, and how trials
are scored. A suite is a default; every field can be overridden on the command line.

- ``smoke``: minutes on 2 CPU cores, end to end with the embedded model (CI runs it).
- ``default``: the 16 held-out tasks it was built on (``DEFAULT_SUITE_TASKS``) x LightGBM and XGBoost x all methods x budgets
  1, 2, 5, 10, 20, 30 x 3 seeds, rows capped and 3-fold CV so that it fits 2 CPU cores.
- ``zero-shot``: every held-out dataset at its real size x LightGBM and XGBoost x the zero-shot
  selectors (``portfolio``, ``knn``, ``flaml-zeroshot``, the ``oracle-pool`` ceiling), the TPEs
  and the adapter, budgets 1-5 (10 for the TPEs and llm-tpe): [9/12]'s suite.
- ``zero-shot-30``: the same datasets with [13/16]'s baselines (the log-ratio selectors,
  warm multivariate TPE, Optuna's GP, SMAC3, syne-tune's quantile surrogate, the hybrid with a
  warm TPE half), budgets 1-20 (30 for the TPEs, the GPs and the LLM loop); its own folder.
- ``sllmbo-paper``: the SLLMBO paper's concrete task under its exact protocol, 50 trials,
  5 seeds, TPE and LLM-TPE (``sllmbo.eval.paper``).
- ``gpu``: Code Llama 7B Instruct from a local folder behind vLLM; defined here, run where a
  GPU is (``--model-path`` names the folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.eval.methods import get as get_method
from sllmbo.eval.methods import names

#: The default suite's methods, as the results name them (``sllmbo.eval.methods`` runs them).
METHODS: tuple[str, ...] = (
    "defaults", "random", "tpe", "tpe-seeded", "portfolio",
    "single-shot", "llm", "llm-tpe",
    "single-shot-base", "llm-base", "llm-tpe-base",
)
#: The zero-shot selectors over the cross-evaluated pool ([9/12]) and FLAML's zero-shot
#: portfolio. ``oracle-pool`` is the ceiling of any pool selector: reported, never a competitor.
ZERO_SHOT_METHODS: tuple[str, ...] = (
    "defaults", "portfolio", "knn", "flaml-zeroshot", "oracle-pool",
    "tpe", "tpe-seeded", "tpe-seeded-portfolio", "single-shot", "llm-tpe",
)
#: The scoring and pick formulations ([10/12]): the adapter ranks the committed pool (one
#: forward pass per entry, or one for the whole pool), no decoding.
SCORING_METHODS: tuple[str, ...] = ("single-shot-score", "single-shot-pick")
#: Few-shot ([10/12]): the portfolio's first entries, then each next pool entry from the run's
#: own scores: by the nearest training variants (``feedback``, a baseline) or the adapter's
#: pick given them (``llm-feedback``). ``sllmbo tune --sampler`` runs the same samplers.
FEEDBACK_METHODS: tuple[str, ...] = ("feedback", "llm-feedback")
#: [13/16]'s baselines configured as their authors run them, and the hybrid with its TPE half
#: configured the same way.
STRONG_BASELINES: tuple[str, ...] = ("portfolio-ratio", "knn-ratio", "tpe-warm", "gp",
                                     "gp-warm", "smac", "quantile-surrogate")
#: What an LLM method must beat in the zero-shot suites, tested over datasets.
ZERO_SHOT_BASELINES: tuple[str, ...] = ("portfolio", "knn", "flaml-zeroshot", "defaults",
                                        "tpe", "tpe-seeded", "tpe-seeded-portfolio",
                                        *STRONG_BASELINES)
ALL_FAMILIES: tuple[str, ...] = ("lightgbm", "xgboost", "random_forest", "mlp")


#: The default suite's held-out tasks: the 16 of the split it was built and committed on, before
#: [9/12] moved 17 more datasets to the held-out split (those are the zero-shot suite's too).
DEFAULT_SUITE_TASKS: tuple[str, ...] = (
    "concrete_strength", "bike_sharing", "auto_mpg", "carseat_sales", "hitters_salary",
    "diamond_prices", "cps_income", "german_credit", "titanic_survival", "penguin_species",
    "oj_purchase", "seattle_weather", "acs_income", "ames_house_price", "credit_scoring_status",
    "hawk_species",
)


@dataclass(frozen=True)
class Suite:
    """What an evaluation runs. ``tasks`` None: every held-out task. ``protocol``: a named
    scoring protocol (``sllmbo-paper``) instead of the registry's splits and K-fold CV."""

    name: str
    tasks: tuple[str, ...] | None
    families: tuple[str, ...]
    methods: tuple[str, ...]
    budgets: tuple[int, ...]
    seeds: int
    n_folds: int = 3
    max_rows: int | None = None
    protocol: str | None = None
    backend: str = "transformers"
    model_path: str | None = None
    #: LLM settings that differ from ``tune``'s (e.g. no early stopping at equal budgets).
    llm: dict[str, Any] = field(default_factory=dict)
    #: Largest budget of a method where it is below the suite's (its runs stop there).
    budget_caps: dict[str, int] = field(default_factory=dict)
    #: Deterministic methods run with seed 0 only (their other seeds would repeat it).
    single_seed: tuple[str, ...] = ()
    #: "committed" portfolios (eval/portfolios) or ones rebuilt on the training "matrix".
    portfolio_source: str = "committed"
    #: tasks None and this set: each held-out dataset at its real size (its top variant).
    heldout_variants: bool = False

    def seeds_of(self, method: str) -> int:
        return 1 if method in self.single_seed else self.seeds

    def budget_of(self, method: str) -> int:
        """The largest budget ``method`` runs to: the suite's cap for it, else the method's
        own (``Method.budget_cap``), never above the suite's largest budget."""
        cap = self.budget_caps.get(method, get_method(method).budget_cap or self.max_budget)
        return min(cap, self.max_budget)

    @property
    def max_budget(self) -> int:
        return max(self.budgets)

    def override(self, **changes: Any) -> Suite:
        """The suite with the command line's choices (None: keep the suite's)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


SUITES: dict[str, Suite] = {
    "smoke": Suite(
        name="smoke",
        tasks=("auto_mpg", "penguin_species"),
        families=("lightgbm",),
        methods=("defaults", "random", "tpe", "tpe-seeded", "portfolio", "single-shot-base",
                 "llm-tpe-base"),
        budgets=(1, 2, 4),
        seeds=1,
        n_folds=2,
        max_rows=300,
        llm={"max_tokens": 160},
    ),
    "default": Suite(
        name="default",
        tasks=DEFAULT_SUITE_TASKS,
        families=("lightgbm", "xgboost"),
        methods=METHODS,
        budgets=(1, 2, 5, 10, 20, 30),
        seeds=3,
        n_folds=3,
        max_rows=1000,  # the corpus's row cap (data/corpus/README.md)
    ),
    "sllmbo-paper": Suite(
        name="sllmbo-paper",
        tasks=("concrete_strength",),
        families=("lightgbm", "xgboost"),
        methods=("tpe", "llm-tpe-base", "llm-tpe"),
        budgets=(1, 5, 10, 20, 30, 50),
        seeds=5,
        n_folds=5,
        protocol="sllmbo-paper",
        llm={"init": "initializer"},  # the paper's loop starts from its initializer
    ),
}
#: The zero-shot suite ([9/12]): every held-out dataset at its real size; the pool
#: selectors and FLAML up to 5 trials, the TPEs and llm-tpe to 10. Two seeds for the
#: stochastic methods, one for the deterministic ones: that, the top variant only, and 3-fold
#: CV are what keep it near 4 hours on 2 cores.
SUITES["zero-shot"] = Suite(
    name="zero-shot",
    tasks=None,
    families=("lightgbm", "xgboost"),
    # ``llm-feedback`` needs an adapter trained for it (its pilot lost to the portfolio on
    # validation, README): ``--methods ...,llm-feedback --adapter DIR`` adds it.
    methods=ZERO_SHOT_METHODS + SCORING_METHODS + ("feedback",),
    budgets=(1, 2, 3, 5, 10),
    seeds=2,
    n_folds=3,
    budget_caps={m: 5 for m in ("defaults", "portfolio", "knn", "flaml-zeroshot",
                                "oracle-pool", "single-shot", *SCORING_METHODS,
                                *FEEDBACK_METHODS)},
    single_seed=names(deterministic=True),
    portfolio_source="matrix",
    heldout_variants=True,
    backend="auto",  # the fast CPU engine ([11/12]); the default suite keeps the engine it ran on
)
#: ``zero-shot-30`` runs these to 30 trials; every other method to 20.
LONG_METHODS: tuple[str, ...] = ("tpe", "tpe-warm", "gp", "gp-warm", "llm-tpe-warm")
#: [13/16]'s suite: the zero-shot suite's datasets, families and seeds with the baselines
#: configured as their authors run them, at the budgets users run (its own folder, so the
#: committed ``zero-shot`` results stay valid).
SUITES["zero-shot-30"] = replace(
    SUITES["zero-shot"],
    name="zero-shot-30",
    methods=("defaults", "portfolio", "knn", "portfolio-ratio", "knn-ratio",
             "defaults-first-ratio", "flaml-zeroshot",
             "oracle-pool", "feedback", "gbdt-rank", "quantile-surrogate", "tpe", "tpe-warm", "gp",
             "gp-warm", "smac", "single-shot", *SCORING_METHODS, "llm-tpe-warm"),
    budgets=(1, 3, 5, 10, 20, 30),
    budget_caps={m: 20 for m in names() if m not in LONG_METHODS},
)
#: The default suite with Code Llama 7B Instruct behind vLLM (``--model-path`` its folder).
SUITES["gpu"] = replace(SUITES["default"], name="gpu", backend="vllm")


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise SllmboError(f"unknown suite '{name}'", hint=f"choose one of: {', '.join(SUITES)}")
    return SUITES[name]


def parse_budgets(text: str) -> tuple[int, ...]:
    """``"1,2,5"`` -> (1, 2, 5), sorted and unique; ``SllmboError`` on anything else."""
    try:
        budgets = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SllmboError(f"--budgets must be comma-separated integers, got '{text}'") from None
    if not budgets or budgets[0] < 1:
        raise SllmboError(f"--budgets must be integers >= 1, got '{text}'")
    return tuple(budgets)


def parse_names(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """A comma-separated subset of ``allowed`` (``all``: every one), in the given order."""
    if text.strip() == "all":
        return allowed
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise SllmboError(f"{flag}: unknown {', '.join(unknown) or '(empty)'}",
                          hint=f"choose from: {', '.join(allowed)} (or all)")
    return names
