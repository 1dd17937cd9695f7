"""Scaling out on Lightning's own distributed engine: what kdexp adds around it.

- ``env_is_global_zero``: whether this process is global rank 0, read from the launcher's
  environment before any process group exists (teacher provisioning runs before ``fit``).
- ``EvalShardSampler``: validation and test shards without padding, so that every sample is
  evaluated exactly once; torchmetrics sums the per-rank states when a metric is computed.
- ``scaled_lr``: the linear learning-rate scaling rule (off unless the optimizer config asks).
- SLURM: a run directory named after the job (the ``kdexp.slurm_job_dir`` resolver, which
  kdexp.tools.config registers), the choice of the checkpoint a requeued job resumes from, and the
  removal of Lightning's consumed HPC checkpoints.

Who owns what under SLURM: the requeue *signal* belongs to the launcher — Lightning's
``SLURMEnvironment`` (SIGUSR1, ``#SBATCH --signal=SIGUSR1@90``) for a plain ``sbatch`` job, submitit
(SIGUSR2, ``hydra.launcher.max_num_timeout``) for a sweep on ``hydra/launcher=slurm``; kdexp owns the
run directory and *which checkpoint* the requeued job resumes from (docs/scaling.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sized

from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

log = logging.getLogger(__name__)

AUTO_RESUME = ("slurm", "always", "never")
HPC_PATTERN = "hpc_ckpt_*.ckpt"  # Lightning's checkpoint on its SLURM requeue signal
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"  # callbacks.last_checkpoint (every epoch)


# --- ranks, before the process group exists -----------------------------------------------------
def in_slurm_job() -> bool:
    """Inside a SLURM job that SLURM manages (Lightning's rule: not an interactive 'bash' shell)."""
    return "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def env_is_global_zero() -> bool:
    """Whether this process will be global rank 0, from the variables its launcher sets.

    torchrun (and any launcher that sets ``RANK``): ``RANK``; ``srun`` under SLURM: ``SLURM_PROCID``;
    Lightning's own ``ddp`` launcher: ``NODE_RANK`` and ``LOCAL_RANK`` (unset in the first process).
    """
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    if "SLURM_NTASKS" in os.environ and in_slurm_job():  # Lightning's SLURMEnvironment.detect()
        return int(os.environ.get("SLURM_PROCID", 0)) == 0
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    return node == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def launch_id() -> str | None:
    """An id that every process of this launch shares and the next launch does not, or None."""
    if "SLURM_JOB_ID" in os.environ:
        parts = ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_RESTART_COUNT")
        return "slurm-" + "-".join(os.environ.get(p, "0") for p in parts)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun-" + os.environ["TORCHELASTIC_RUN_ID"]
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        return f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    return None


# --- evaluation shards ----------------------------------------------------------------------------
class EvalShardSampler(DistributedSampler):
    """Rank ``r`` of ``n`` evaluates samples ``r, r+n, r+2n, …``: no padding, no duplicates.

    Shards differ in length by at most one sample, so ranks may run different numbers of
    batches; that is safe in evaluation (DDP syncs buffers only on the first batch without grad,
    and every rank has one) and torchmetrics gathers uneven states when it computes.
    A ``DistributedSampler`` subclass, so Lightning keeps it instead of injecting its padding one.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        assert isinstance(dataset, Sized)
        if len(dataset) < num_replicas:
            raise ValueError(
                f"the evaluation set has {len(dataset)} samples, fewer than the {num_replicas} processes "
                "(trainer.devices × trainer.num_nodes); use fewer devices or a larger evaluation set"
            )
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def eval_sampler(dataset: Dataset, trainer: Any) -> EvalShardSampler | None:
    """The sampler of an evaluation loader that ``trainer`` requests under DDP, else None."""
    if trainer is None or trainer.world_size <= 1 or not trainer.evaluating:
        return None  # one process, or a loader asked for outside Lightning's loops
    return EvalShardSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank)


# --- learning rate --------------------------------------------------------------------------------
def scaled_lr(
    lr: float,
    world_size: int,
    batch_size: int | None,
    reference_batch_size: int | None = None,
    accumulate_grad_batches: int = 1,
) -> float:
    """Linear scaling rule (Goyal et al. 2017): lr × global batch / reference batch, where

        global batch = batch_size (per device) × world_size × accumulate_grad_batches

    and ``reference_batch_size`` (the global batch ``lr`` was tuned for) defaults to
    ``batch_size``: the same per-device batch on one device, so lr × world_size × accumulation.
    """
    if batch_size is None:
        batch_size = reference_batch_size or 1
    reference = reference_batch_size or batch_size
    if reference <= 0 or batch_size <= 0:
        raise ValueError(f"optimizer.reference_batch_size={reference} and the batch size must be positive")
    return lr * batch_size * world_size * accumulate_grad_batches / reference


# --- configuration checks -------------------------------------------------------------------------
def check_distributed_cfg(trainer_cfg: dict[str, Any], auto_resume: Any) -> None:
    """Combinations Lightning would only reject in the middle of training."""
    if str(auto_resume) not in AUTO_RESUME:
        raise ValueError(f"auto_resume={auto_resume!r} is unknown; choose one of: {', '.join(AUTO_RESUME)}")
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    many = nodes > 1 or devices == -1 or (isinstance(devices, int) and devices > 1) or isinstance(devices, list)
    if trainer_cfg.get("sync_batchnorm") and trainer_cfg.get("accelerator") == "cpu" and many:
        raise ValueError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm rejects CPU tensors); "
            "set trainer.sync_batchnorm=false for trainer.accelerator=cpu"
        )


# --- SLURM: run directory and resume --------------------------------------------------------------
def slurm_job_dir(fallback: str) -> str:
    """``slurm/<job id>`` (``slurm/<array job id>_<task id>`` for an array task) in a SLURM job.

    The same on every attempt of a requeued job, so it finds its own checkpoints; ``fallback``
    (a timestamp) elsewhere and in interactive allocations, where one job holds many runs.
    """
    if not in_slurm_job():
        return fallback
    if "SLURM_ARRAY_JOB_ID" in os.environ and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"slurm/{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return f"slurm/{os.environ['SLURM_JOB_ID']}"


def resume_checkpoint(
    ckpt_path: str | None, output_dir: str | Path, auto_resume: str = "slurm", last: str | Path | None = None
) -> str | None:
    """The checkpoint ``fit`` resumes from: ``ckpt_path`` if given, else (auto-resume) the newest of
    ``<output_dir>/checkpoints/last.ckpt`` and Lightning's ``<output_dir>/hpc_ckpt_*.ckpt``.

    ``auto_resume``: ``slurm`` (only inside a SLURM job, whose run directory is its own: a requeued
    attempt continues), ``always`` (also a rerun into an existing ``hydra.run.dir``), ``never``.
    """
    if ckpt_path:
        return str(ckpt_path)
    if auto_resume == "never" or (auto_resume == "slurm" and not in_slurm_job()):
        return None
    output_dir = Path(output_dir)
    last = Path(last) if last is not None else output_dir / LAST_CHECKPOINT  # the run folder's (kdexp.runner.folder)
    found = [p for p in (last, *output_dir.glob(HPC_PATTERN)) if p.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    log.info("Resuming from %s (auto_resume=%s; auto_resume=never starts over)", newest, auto_resume)
    return str(newest)


def discard_hpc_checkpoints(trainer: Any) -> None:
    """After ``fit``: delete Lightning's HPC checkpoints, which it would otherwise load in ``test``.

    Under SLURM, ``trainer.test(model)`` loads the newest ``hpc_ckpt_*.ckpt`` in
    ``default_root_dir`` instead of the weights just trained; once ``fit`` has finished they
    are consumed (``checkpoints/last.ckpt`` holds the final state). Call on every rank.
    """
    if trainer.is_global_zero:
        for path in Path(trainer.default_root_dir).glob(HPC_PATTERN):
            path.unlink(missing_ok=True)
    trainer.strategy.barrier("kdexp.discard_hpc_checkpoints")


__all__ = [
    "AUTO_RESUME",
    "EvalShardSampler",
    "check_distributed_cfg",
    "discard_hpc_checkpoints",
    "env_is_global_zero",
    "eval_sampler",
    "in_slurm_job",
    "launch_id",
    "resume_checkpoint",
    "scaled_lr",
    "slurm_job_dir",
]
