"""Hyperparameter search with Optuna (seed 000 step 2): search space, study, best parameters.

The objective trains a candidate on the category's normal images exactly as ``ad-core train``
would (same seed, split and options) and scores the labelled test split: image AUROC, with best
F1 as the tie-break (or the other way round with ``metric="f1"``). Trained models (EfficientAD,
VAE) report the test AUROC after every epoch, so hopeless trials are pruned early.

The study lives in an Optuna storage: by default an SQLite file beside the category's runs
(``models/<Model>/<CATEGORY>/optuna.db``), so a crashed or interrupted search resumes with the same
command and no finished trial is lost. Any Optuna storage URL (PostgreSQL, MySQL) or a journal
file (``journal:PATH`` or ``*.log``) lets several processes or machines work on one study.

Results go to the run directory's ``param/`` folder (the seed's flow: tune, then train into the
same run): ``search_space.yaml``, ``best_params.yaml``, ``trials.csv`` and
``optimisation_history.png``. ``ad-core train --params <run>/param/best_params.yaml`` trains the
best trial's configuration.
"""

from ad_core.errors import TuneError
from ad_core.tune.results import BestParams, TuneResult, best_trial, load_best_params, write_results
from ad_core.tune.space import (
    DEFAULT_RANGES,
    LAYER_CHOICES,
    METRICS,
    Dim,
    SearchSpace,
    default_search_space,
    load_search_space,
    parse_search_space,
)
from ad_core.tune.storage import open_storage
from ad_core.tune.study import tune

__all__ = [
    "DEFAULT_RANGES",
    "LAYER_CHOICES",
    "METRICS",
    "BestParams",
    "Dim",
    "SearchSpace",
    "TuneError",
    "TuneResult",
    "best_trial",
    "default_search_space",
    "load_best_params",
    "load_search_space",
    "open_storage",
    "parse_search_space",
    "tune",
    "write_results",
]
