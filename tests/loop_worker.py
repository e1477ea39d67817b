"""A tune worker with a scripted LLM, run as a real subprocess by the worker tests:
``python tests/loop_worker.py STORAGE_URL STUDY N_TRIALS SAMPLER``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from llm_scripts import VALID, ScriptedBackend

from sllmbo.tune import LLMOptions, tune

if __name__ == "__main__":
    url, study, n_trials, sampler = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tune("diabetes", sampler=sampler, n_trials=n_trials, n_folds=2, storage=url,
         study_name=study, progress=False, seed=0,
         backend=ScriptedBackend([VALID], latency_s=0.05, seed=hash(sys.argv[0]) % 1000),
         llm=LLMOptions(n_initial=2, patience=0, space="llm"))
