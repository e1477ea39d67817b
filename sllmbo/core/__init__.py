"""The foundation room: what every stage shares, importing nothing above it.

``errors``, ``families`` (the ML model families and ``FAMILIES``), ``space`` (search spaces),
``taskcard``, ``task`` (a loaded tabular task), ``objective`` and ``protocol`` (the CV objective
and named scoring protocols), ``storage`` (opening Optuna storages, masking secrets),
``studyinfo`` (study and trial attribute keys), ``prompts``, ``history`` and
``optimizer_prompt`` (the one pure rendering of prompts that training and inference share),
``rank_prompts`` (the learned scorer's prompt and bin tokens, likewise shared), ``home`` (where
local models and adapters live), ``registry`` (the one registry type of every extension
point: model families, samplers, evaluation methods) and ``renamed`` (keywords of the Python
API taken under their old names, with a ``FutureWarning``).

The architecture, as ``tests/test_layering.py`` enforces it on every import (top level,
inside functions, relative and ``importlib``). Data flows left to right; a room imports only
itself and the rooms named on its line:

==========  ==============================  ==========================================
room        packages                        may import
==========  ==============================  ==========================================
core        ``sllmbo.core``                 (nothing of the project)
data        ``sllmbo.data``                 core
training    ``sllmbo.training``             core, data
inference   ``sllmbo.inference``            core
loop        ``sllmbo``, ``sllmbo.samplers``  core, data, training, inference
eval        ``sllmbo.eval``                 core, data, training, inference, loop
cli         ``sllmbo.cli``, ``__main__``     every room
==========  ==============================  ==========================================

One named exception: ``sllmbo.data.collect`` runs the corpus studies through the loop
(``sllmbo.tune``). No circle of imports exists between modules, anywhere.
"""
