"""A progress bar over a study's completed trials (rich), usable as an Optuna callback."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class TrialProgress:
    """Counts COMPLETE trials in storage (other workers' too) toward ``target``."""

    def __init__(self, study: Any, target: int, enabled: bool = True) -> None:
        self.study = study
        self.target = target
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TimeElapsedColumn(),
            disable=not enabled,
            transient=False,
        )
        self._task_id: Any = None

    def __enter__(self) -> TrialProgress:
        self._progress.start()
        self._task_id = self._progress.add_task(
            self.study.study_name, total=self.target, best="-"
        )
        self._refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        self._refresh()
        self._progress.stop()

    def callback(self, study: Any, trial: Any) -> None:
        self._refresh()

    def _refresh(self) -> None:
        from optuna.trial import TrialState

        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = "-"
        if complete:
            best = f"{self.study.best_value:.5g}"
        self._progress.update(self._task_id, completed=min(len(complete), self.target), best=best)
