"""Merging matrix exports: collected apart, merged, the same bytes as collected together."""

from __future__ import annotations

from pathlib import Path

import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.data.matrix import MatrixSpec, collect_matrix, read_matrix, training_spec
from sllmbo.data.matrix_merge import main, merge_exports
from sllmbo.data.pool import Pool

DATASETS = ["professor_salaries", "iris_species"]


def _fixed_scorer(task: object, family: object, config: dict) -> dict[str, float]:
    """A deterministic stand-in for CV (fit times too), so two collections compare."""
    score = 1.0 + config.get("learning_rate", 0.0) + len(task.name) / 100  # type: ignore[attr-defined]
    return {"score": score, "score_std": 0.05, "n_fits": 9, "fit_seconds": 0.5}


def _spec(datasets: list[str]) -> MatrixSpec:
    spec = training_spec(datasets=datasets)
    return MatrixSpec("train", spec.variants, tuple(Pool(p.family, p.configs[:2])
                                                    for p in spec.pools))


def _collect(spec: MatrixSpec, tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.csv.gz"
    collect_matrix(spec, f"sqlite:///{tmp_path}/{name}.db", out, workers=1, poll_s=0.2,
                   scorer=_fixed_scorer)
    return out


@pytest.fixture(scope="module")
def iris_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _collect(_spec(["iris_species"]), tmp_path_factory.mktemp("iris"), "iris")


@pytest.fixture(scope="module")
def together(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both datasets collected in one storage."""
    return _collect(_spec(DATASETS), tmp_path_factory.mktemp("together"), "together")


def test_exports_collected_apart_merge_into_the_bytes_of_one_collection(
        tmp_path: Path, together: Path, iris_part: Path) -> None:
    whole = _spec(DATASETS)
    parts = [_collect(_spec(["professor_salaries"]), tmp_path, "professor"), iris_part]
    merged = merge_exports(whole, parts, tmp_path / "merged.csv.gz")
    assert merged.read_bytes() == together.read_bytes()
    assert (tmp_path / "merged.json").read_bytes() == together.with_name("together.json").read_bytes()
    # Variants keep the spec's order (smallest first), whatever order the parts come in.
    again = merge_exports(whole, parts[::-1], tmp_path / "again.csv.gz")
    assert again.read_bytes() == together.read_bytes()


def test_a_later_part_wins_a_cell_and_a_foreign_variant_is_refused(tmp_path: Path,
                                                                   iris_part: Path) -> None:
    whole = _spec(DATASETS)
    first = iris_part
    pools = {p.family: p for p in whole.pools}
    matrix = read_matrix(first, pools=pools)
    cells = matrix.cells.assign(score=matrix.cells["score"] + 1)
    newer = tmp_path / "newer.csv.gz"
    from sllmbo.data.matrix import write_export

    write_export(_spec(["iris_species"]),
                 [{k: (None if v != v else v) for k, v in r.items()}
                  for r in cells.to_dict("records")], matrix.header["cards"], newer)
    merged = read_matrix(merge_exports(whole, [first, newer], tmp_path / "m.csv.gz"), pools=pools)
    assert merged.cells["score"].tolist() == pytest.approx(cells["score"].tolist(), rel=1e-5)
    with pytest.raises(SllmboError, match="not planned by the registry"):
        merge_exports(_spec(["professor_salaries"]), [first], tmp_path / "x.csv.gz")


def test_cli_refuses_a_part_of_another_pool_with_one_message(tmp_path: Path, iris_part: Path,
                                                            capsys) -> None:
    assert main([str(iris_part), "--into", str(tmp_path / "into.csv.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "another pool" in err and "Traceback" not in err


def test_selecting_datasets_takes_their_cells_out_of_a_whole_export(tmp_path: Path,
                                                                   together: Path) -> None:
    whole = _spec(DATASETS)
    iris = merge_exports(_spec(["iris_species"]), [together], tmp_path / "iris.csv.gz",
                         select=True)
    cells = read_matrix(iris, pools={p.family: p for p in whole.pools}).cells
    assert set(cells["variant"]) == {"iris_species@120"} and len(cells) == 4
