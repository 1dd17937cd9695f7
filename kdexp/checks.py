"""Cheap checks of the trainer, data, seed, optimizer and path options, before any work.

Each bad value raises a ValueError that names the key, the value and what is allowed (the run
layer turns it into exit 2). They run before data is read or a teacher trains, so a typo costs
seconds, not a teacher's training. Method options are checked by ``kdexp.methods``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Lightning's precision names (the short aliases "32", "16", "bf16", "64" are accepted too).
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64")
GPU_ACCELERATORS = ("gpu", "cuda")


def _int(value: Any, key: str, minimum: int, meaning: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}{meaning}")
    if value < minimum:
        raise ValueError(f"{key}={value} must be >= {minimum}{meaning}")
    return value


def check_trainer(trainer: dict[str, Any]) -> None:
    """trainer.accelerator (a GPU that exists), max_epochs, accumulate_grad_batches, precision,
    gradient_clip_val."""
    import torch

    accelerator = str(trainer.get("accelerator", "auto"))
    has_gpu = torch.cuda.is_available()
    if accelerator in GPU_ACCELERATORS and not has_gpu:
        raise ValueError(
            f"trainer.accelerator={accelerator} (trainer=gpu) but this machine has no usable GPU "
            "(torch.cuda.is_available() is False); use trainer=cpu or trainer=default (accelerator=auto)"
        )
    _int(trainer.get("max_epochs"), "trainer.max_epochs", 1, " (the number of epochs to train; -1, 'forever', is not supported)")
    _int(trainer.get("accumulate_grad_batches", 1), "trainer.accumulate_grad_batches", 1, " (batches per optimizer step)")
    precision = str(trainer.get("precision", "32-true"))
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r} is unknown; choose one of: {', '.join(PRECISIONS[:6])}")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not has_gpu)
    if on_cpu and precision in ("16-mixed", "16"):
        raise ValueError(
            f"trainer.precision={precision} needs a GPU (float16 autocast); on a CPU use "
            "precision=bf16-mixed or precision=32-true"
        )
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or clip < 0):
        raise ValueError(f"trainer.gradient_clip_val={clip!r} must be null or a number >= 0")


def check_data(data: dict[str, Any]) -> None:
    """data.batch_size, eval_batch_size, num_workers, val_size."""
    _int(data.get("batch_size"), "data.batch_size", 1)
    if data.get("eval_batch_size") is not None:
        _int(data.get("eval_batch_size"), "data.eval_batch_size", 1)
    _int(data.get("num_workers", 0), "data.num_workers", 0, " (0 = load in the main process)")
    if data.get("val_size") is not None:
        _int(data.get("val_size"), "data.val_size", 0)


def check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed!r} must be an integer from 0 to 2**32 - 1")


def check_optimizer(optimizer: dict[str, Any]) -> None:
    lr = optimizer.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"optimizer.lr={lr!r} must be a number > 0 (with 0 the student would not train)")
    wd = optimizer.get("weight_decay", 0.0)
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or wd < 0:
        raise ValueError(f"optimizer.weight_decay={wd!r} must be a number >= 0")


def check_loss_weights(method: dict[str, Any]) -> None:
    """A method whose every loss weight (``*_weight``) is 0 would train nothing."""
    weights = {k: v for k, v in method.items() if k.endswith("_weight") and isinstance(v, (int, float))}
    if weights and all(v == 0 for v in weights.values()):
        listed = ", ".join(f"method.{k}=0" for k in weights)
        raise ValueError(f"every loss weight is 0 ({listed}): the student would not train; set at least one > 0")


def check_folder(path: Any, key: str) -> None:
    """A folder kdexp writes into must not be an existing file (nor lie under one)."""
    if not path:
        return
    for ancestor in (Path(str(path)).expanduser().absolute(), *Path(str(path)).expanduser().absolute().parents):
        if os.path.lexists(ancestor):
            if not ancestor.is_dir():
                raise ValueError(f"{key}={str(path)!r}: {ancestor} is a file, not a folder; give a folder path")
            return


def cache_key_name(cache_dir: Any) -> str:
    """How the user set the teacher cache folder: the environment variable or the config key."""
    return "KDEXP_CACHE_DIR" if os.environ.get("KDEXP_CACHE_DIR") == str(cache_dir) else "paths.cache_dir"


def check_cache_writable(cache_dir: Any) -> None:
    """The teacher cache takes a lock file and new entries: its folder must be writable."""
    from kdexp.callbacks import unwritable_reason

    reason = unwritable_reason(str(cache_dir))
    if reason:
        raise ValueError(
            f"{cache_key_name(cache_dir)}={str(cache_dir)!r}: {reason}; the teacher cache needs a writable folder: "
            "set KDEXP_CACHE_DIR (or paths.cache_dir=...) to one, or give teacher.checkpoint=<file>"
        )


def check_teacher_quantize(teacher: dict[str, Any]) -> None:
    """``teacher.quantize`` is refused: a teacher trains in full precision and is used frozen (a
    quantisation-aware teacher's observers would move while it teaches, and its entry would not
    load back); quantisation-aware training is the student's (``student.quantize``)."""
    if teacher.get("quantize") is None:
        return
    from kdexp.quantize import ACTIVATION_BITS, WEIGHT_BITS

    raise ValueError(
        f"teacher.quantize={teacher['quantize']!r} is not supported: the teacher is trained in full precision "
        "and used frozen, so teacher.quantize must be absent (drop the +teacher.quantize.* overrides). "
        f"Quantisation-aware training is for the student: student.quantize.weight_bits in {list(WEIGHT_BITS)}, "
        f"student.quantize.activation_bits in {list(ACTIVATION_BITS)}"
    )


# Loggers whose package is an extra of kdexp's: the class, its package and the extra that installs it.
LOGGER_EXTRAS = {"WandbLogger": ("wandb", "wandb"), "MLFlowLogger": ("mlflow", "mlflow")}


def check_loggers(loggers: Any) -> None:
    """Each configured logger's package is installed (a ValueError naming the extra otherwise):
    checked before any training, not when the student's trainer starts after the teacher's."""
    import importlib.util

    for key, node in (loggers or {}).items():
        target = str((node or {}).get("_target_", ""))
        package, extra = LOGGER_EXTRAS.get(target.rpartition(".")[2], (None, None))
        if package and importlib.util.find_spec(package) is None:
            raise ValueError(
                f"logger={key} needs the {package!r} package, which is not installed: pip install 'kdexp[{extra}]' "
                "(or choose another logger: logger=tensorboard | csv | none)"
            )


def check_run_options(cfg: DictConfig) -> None:
    """Every check above, on a run's config (before any data, model or teacher work)."""
    plain = lambda node: OmegaConf.to_container(node, resolve=True) if node is not None else {}  # noqa: E731
    check_seed(cfg.get("seed"))
    check_trainer(plain(cfg.trainer))
    check_data(plain(cfg.data))
    check_optimizer(plain(cfg.optimizer))
    check_loss_weights(plain(cfg.method))
    check_teacher_quantize(plain(cfg.get("teacher")))
    cache_dir = OmegaConf.select(cfg, "paths.cache_dir")
    check_folder(cache_dir, cache_key_name(cache_dir))
