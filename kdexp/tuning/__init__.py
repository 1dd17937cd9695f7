"""Hyperparameter search on Optuna (>= 4): the search space (a sweeper's ``params``, or a method's
own declared ranges), the study a sweep shares with other processes (budget, failed, pruned and
retried trials), the pruning callback a trial's run reports to, the study's pictures, and
``kdexp-compare``, the equal-budget comparison of methods.

The Hydra sweeper itself is ``hydra_plugins/kdexp_optuna`` (``hydra/sweeper=optuna``), a thin
adapter over :mod:`kdexp.tuning.study`. Optuna is imported only where a search runs.
"""
