"""A federated run (``kdexp federated=<preset> method=<a federated method>``): the runner a
method's ``federated`` declaration names (kdexp.runner.kinds.STEP_RUNNERS), so the run layer finds
it by the declaration, never by a method's name.

It checks the settings, builds the experiment (kdexp.federated.experiment), runs the engine
``federated.engine`` names (kdexp.federated.engines), and after every round saves where the run
stands (``checkpoints/federated_last.pt``, atomically; the local engine resumes from it with
``ckpt_path=last``) and logs the round's curves; at the end it writes results.json, the clients'
class histograms (``clients.md``, and a picture in TensorBoard) and prints the per-round table.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from kdexp.errors import SetupError
from kdexp.federated.algorithms import algorithm_for
from kdexp.federated.checks import check_federated
from kdexp.federated.engines import ENGINES, RESUMABLE
from kdexp.federated.experiment import FederatedExperiment
from kdexp.federated.rounds import RoundsState
from kdexp.federated.settings import FederatedSettings
from kdexp.federated.summary import federated_section, histogram_figure, histogram_table, rounds_table, student_section
from kdexp.methods.declarations import FEDERATED_RUNNER
from kdexp.results import log_final, table_markdown, write_results
from kdexp.runner.assemble import hparams_row
from kdexp.runner.kinds import STEP_RUNNERS
from kdexp.runner.spec import CONFIG_ERRORS, RunSpec
from kdexp.tools.config import plain
from kdexp.tools.files import save_torch, write_atomic
from kdexp.tools.weights import read_torch

log = logging.getLogger("kdexp")
STATE_FILE = "federated_last.pt"
# What a resumed run must share with the run that wrote the checkpoint (rounds may grow).
DEFINING = ("seed", "data", "student", "method", "optimizer", "scheduler")
FREE_KEYS = ("rounds", "engine", "flower", "target_acc")


def read_settings(spec: RunSpec) -> FederatedSettings:
    """``federated.*`` checked with the method's declaration (SetupError naming the key)."""
    node = spec.cfg.get("federated")
    try:
        settings = FederatedSettings.read(plain(node)) if node else None
        check_federated(settings, spec.method)
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err
    return settings


def identity(cfg: DictConfig) -> str:
    """The settings that define the run's numbers, as text (compared when a run resumes)."""
    fed = {k: v for k, v in plain(cfg.federated).items() if k not in FREE_KEYS}
    return json.dumps({**{k: plain(cfg[k]) if isinstance(cfg[k], DictConfig) else cfg[k] for k in DEFINING}, "federated": fed},
                      sort_keys=True, default=str)


def state_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir) / "checkpoints" / STATE_FILE


def resume_state(cfg: DictConfig, settings: FederatedSettings) -> RoundsState | None:
    """The state ``ckpt_path`` names (``last``: this run folder's), or None for a fresh run."""
    given = cfg.get("ckpt_path")
    if not given and cfg.get("auto_resume") == "always" and state_path(cfg).is_file():
        given = "last"
    if not given:
        return None
    if settings.engine not in RESUMABLE:
        raise SetupError(f"ckpt_path: federated.engine={settings.engine} runs cannot resume; the engines that can: {', '.join(RESUMABLE)}")
    path = state_path(cfg) if given == "last" else Path(str(given))
    if not path.is_file():
        raise SetupError(f"ckpt_path={given}: no federated checkpoint at {path} (a federated run writes checkpoints/{STATE_FILE} after every round)")
    saved = read_torch(path)
    if saved.get("identity") != identity(cfg):
        raise SetupError(f"ckpt_path={given}: {path} was written by a federated run with other settings (seed, data, "
                         "models, method, optimizer or federated split); resume with the same settings, or start a new run")
    log.info("Resuming the federated run after round %d (%s)", len(saved["history"]), path)
    return RoundsState(saved["server"], saved["history"], saved["clients"])


def make_loggers(cfg: DictConfig) -> list[Any]:
    resolved = copy.deepcopy(cfg)
    OmegaConf.resolve(resolved)
    return [instantiate(lg) for lg in (resolved.get("logger") or {}).values() if lg]


def round_logger(cfg: DictConfig, loggers: list[Any]):
    """What happens after every round: save the state (atomically), log the curves and a line."""
    identity_text = identity(cfg)

    def after_round(state: RoundsState, record: dict[str, Any]) -> None:
        path = state_path(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch(path, {"identity": identity_text, "server": state.server, "history": state.history, "clients": state.clients})
        scalars = {f"federated/{k}": float(v) for k, v in record.items() if isinstance(v, (int, float)) and k != "round"}
        for logger in loggers:
            logger.log_metrics(scalars, step=record["round"])
        glob = record["global_test_acc"]
        log.info("round %d/%d  accuracy %.2f%%%s  clients %.2f%% (min %.2f, max %.2f)  bytes %d  %.1fs",
                 record["round"], cfg.federated.rounds, 100 * record["accuracy"], "" if glob is None else " (server)",
                 100 * record["client_acc_mean"], 100 * record["client_acc_min"], 100 * record["client_acc_max"],
                 record["bytes_total"], record["wall_s"])

    return after_round


def write_histograms(exp: FederatedExperiment, out: Path, loggers: list[Any]) -> None:
    """The clients' class histograms: ``clients.md`` and a TensorBoard picture."""
    from pytorch_lightning.loggers import TensorBoardLogger

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "clients.md", table_markdown(histogram_table(exp)))
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("federated/client_class_histogram", histogram_figure(exp), 0)


@STEP_RUNNERS.register(FEDERATED_RUNNER)
def run_federated(spec: RunSpec) -> dict[str, Any]:
    """Rounds of clients and a server; results.json with the per-round arrays and the totals."""
    cfg = spec.cfg
    OmegaConf.resolve(cfg)
    settings = read_settings(spec)
    start = resume_state(cfg, settings)
    try:
        exp = FederatedExperiment.build(plain(cfg), settings)
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err
    out = Path(cfg.paths.output_dir)
    torch.manual_seed(int(cfg.seed))
    loggers = make_loggers(cfg)
    write_histograms(exp, out, loggers)
    state = ENGINES.get(settings.engine)(exp, algorithm_for(exp), start, round_logger(cfg, loggers), out)
    return finish(spec, exp, state, loggers)


def finish(spec: RunSpec, exp: FederatedExperiment, state: RoundsState, loggers: list[Any]) -> dict[str, Any]:
    """results.json, the final numbers to the loggers, the printed table."""
    cfg = spec.cfg
    fed = federated_section(exp, state)
    run = {
        "method": spec.method.name, "data": cfg.data.name, "teacher": None, "student": cfg.student.name,
        "seed": cfg.seed, "kind": "federated", "duration_s": round(sum(fed["per_round"]["wall_s"]), 1),
        "output_dir": cfg.paths.output_dir, "complete": True, "status": "complete",
        "hparams": {**hparams_row(cfg, spec.method, None), **{f"federated.{k}": fed[k] for k in ("clients", "alpha", "iid", "local_epochs", "public_size", "clients_per_round")}},
    }
    results = {"run": run, "teacher": {}, "student": student_section(exp, state), "federated": fed}
    write_results(results, cfg.paths.output_dir)
    table = rounds_table(results)
    write_atomic(Path(cfg.paths.output_dir) / "results.md", table_markdown(table))
    metrics = {"final/federated_accuracy": float(fed["final_accuracy"]), "final/federated_total_bytes": float(fed["total_bytes"]),
               "final/student_acc_top1": float(fed["final_accuracy"])}
    for problem in log_final(loggers, {k: v for k, v in run["hparams"].items() if v is not None}, metrics, fed["rounds"]):
        log.warning("A logger could not record the final numbers (results.json has them): %s", problem)
    console = Console() if Console().is_terminal else Console(width=200)
    console.print(table)
    console.print(f"Run folder: {cfg.paths.output_dir}")
    if loggers:
        console.print(f"Curves: tensorboard --logdir {cfg.paths.output_dir}")
    return results
