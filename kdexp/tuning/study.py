"""The study a sweep works on, shared by every process that names the same storage and study:
open it, hand out trials within the study's budget, record what each trial's run returned, and
retry the trials a stopped process left behind.

Budget: ``n_trials`` is the study's total, whoever runs them, so two ``kdexp -m`` processes on one
study run ``n_trials`` trials between them, each once. Counted: finished (complete, pruned), failed
runs (a job that returned no number), and running ones; not counted: trials whose process was
stopped (a signal, or killed: its heartbeat went stale), which are queued again with the same
values, so a resumed sweep runs them first. Handing out a trial (count, then ask) happens under a
file lock beside an SQLite study; across machines (an RDB server) two processes asking in the
same instant may run one trial more than ``n_trials`` between them.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

# Why a trial ended as it did, a user attribute on the trial: failed = its run failed (counted);
# interrupted = its process stopped (queued again, not counted).
OUTCOME = "kdexp_outcome"
FAILED, INTERRUPTED = "failed", "interrupted"
RETRY_OF = "kdexp_retry_of"  # a queued trial: the number of the one it repeats
PRUNED_AT = "kdexp_pruned_epoch"  # set by the run's pruning callback (kdexp.tuning.pruning)
RUN_DIR = "kdexp_run_dir"
# The trial a run belongs to, handed to the job through its environment (hydra.job.env_set, set
# in the process that runs the job, whatever the launcher): {"storage", "study", "trial", "pruner"}.
TRIAL_ENV = "KDEXP_OPTUNA_TRIAL"
DB_NAME = "optuna.db"  # a sweep without a storage keeps its study in <sweep dir>/optuna.db


@dataclass(frozen=True)
class StudySpec:
    """Where a study lives and how it searches (the sweeper's settings)."""

    storage: str
    study_name: str
    direction: str = "maximize"
    n_trials: int = 20
    heartbeat_s: int = 60


def storage_url(storage: str | None, sweep_dir: str | Path) -> str:
    """The study's storage: the one given, or an SQLite file in the sweep folder (so every sweep
    can be resumed, plotted and opened in optuna-dashboard)."""
    if storage:
        return str(storage)
    return f"sqlite:///{(Path(sweep_dir) / DB_NAME).resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///<path>`` storage, else None."""
    prefix = "sqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) and url[len(prefix):] not in ("", ":memory:") else None


def open_storage(spec: StudySpec) -> Any:
    """Optuna's RDB storage with heartbeats: a trial whose process died is failed after
    ``2 × heartbeat_s`` and queued again (:func:`requeue_stale`)."""
    import optuna

    path = sqlite_path(spec.storage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if path is not None else None  # SQLite: wait for the writer
    # Optuna 4.9 renamed the stale-trial callback; 4.0-4.8 know the old name only.
    accepted = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in accepted else "failed_trial_callback"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.9
        return optuna.storages.RDBStorage(
            spec.storage, engine_kwargs=engine, heartbeat_interval=spec.heartbeat_s,
            grace_period=2 * spec.heartbeat_s, **{callback: _requeue},
        )


def open_study(spec: StudySpec, sampler: Any = None, pruner: Any = None) -> Any:
    """The study, created on first use and loaded by every later process."""
    import optuna

    if spec.direction not in ("maximize", "minimize"):
        raise ValueError(f"hydra.sweeper.direction={spec.direction!r}: choose maximize or minimize")
    for attempt in (1, 2):  # processes starting together race to create the tables: the loser loads them
        try:
            with _budget_lock(spec):  # SQLite: one process creates the storage and the study
                return optuna.create_study(
                    storage=open_storage(spec), study_name=spec.study_name, sampler=sampler, pruner=pruner,
                    direction=spec.direction, load_if_exists=True,
                )
        except Exception:  # noqa: BLE001 - a database server's race (IntegrityError); a real error repeats
            if attempt == 2:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _requeue(study: Any, trial: Any) -> None:
    """A trial left running by a process that stopped: queue its values again."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})


def counted(trial: Any) -> bool:
    """Whether ``trial`` uses the study's budget (see the module's docstring)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(OUTCOME) == FAILED


def remaining(study: Any, n_trials: int) -> int:
    return n_trials - sum(counted(t) for t in study.get_trials(deepcopy=False))


@contextlib.contextmanager
def _budget_lock(spec: StudySpec) -> Iterator[None]:
    path = sqlite_path(spec.storage)
    if path is None:
        yield
        return
    from kdexp.tools.files import locked

    with locked(path.with_name(path.name + ".lock")):
        yield


def ask(study: Any, spec: StudySpec, space: dict[str, Any], at_most: int) -> list[Any]:
    """Up to ``at_most`` new trials within the study's budget (queued retries first)."""
    import optuna

    with _budget_lock(spec), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # fail_stale_trials: stable since 2.9
        # Optuna warns that heartbeats are meant for Study.optimize; ask-and-tell beats them itself (Heartbeat)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        optuna.storages.fail_stale_trials(study)  # a dead process's trials: failed, queued again
        n = min(at_most, remaining(study, spec.n_trials))
        return [study.ask(space) for _ in range(max(n, 0))]


class Heartbeat:
    """Records the running trials' heartbeats while their jobs run (Optuna's own optimize loop
    does this; with ask-and-tell the caller must)."""

    def __init__(self, study: Any, trials: list[Any], interval_s: float) -> None:
        self.storage, self.ids = study._storage, [t._trial_id for t in trials]  # Optuna's ask-and-tell has no public id
        self.stop = threading.Event()
        self.interval_s = interval_s
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            for trial_id in self.ids:
                with contextlib.suppress(Exception):  # a finished trial takes no heartbeat
                    self.storage.record_heartbeat(trial_id)
            if self.stop.wait(self.interval_s):
                return

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def trial_env(spec: StudySpec, trial: Any, pruner: dict[str, Any] | None) -> str:
    """What a trial's run needs to report to it (:data:`TRIAL_ENV`): the study, the trial, and the
    pruner's config (a study's pruner is not stored with it)."""
    return json.dumps({"storage": spec.storage, "study": spec.study_name, "trial": trial.number, "pruner": pruner})


def fresh(study: Any, trial: Any) -> Any:
    """The stored state of ``trial`` (its run may have set attributes since it was asked)."""
    return study._storage.get_trial(trial._trial_id)


def tell(study: Any, trial: Any, value: Any, error: BaseException | None = None) -> str:
    """Record what a trial's run returned: a number (complete), pruned by its run's callback
    (pruned), or nothing, NaN or an error (failed, counted). Returns the state's name."""
    from optuna.trial import TrialState

    stored = fresh(study, trial)
    number = None
    with contextlib.suppress(TypeError, ValueError):
        number = float(value) if error is None and value is not None else None
    if number is not None and not math.isfinite(number):
        number = None
    if PRUNED_AT in stored.user_attrs and stored.intermediate_values:
        study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    if number is None:
        trial.set_user_attr(OUTCOME, FAILED)
        if error is not None:
            trial.set_user_attr("kdexp_error", str(error)[:500])
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    study.tell(trial, number)
    return "COMPLETE"


def interrupt(study: Any, trials: list[Any]) -> None:
    """The sweep stopped while ``trials`` ran: record them as interrupted and queue them again."""
    from optuna.trial import TrialState

    for trial in trials:
        with contextlib.suppress(Exception):  # already told, or the storage is gone: nothing to keep
            if fresh(study, trial).state != TrialState.RUNNING:
                continue
            trial.set_user_attr(OUTCOME, INTERRUPTED)
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
