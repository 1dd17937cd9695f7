"""Building a run from its config: checks, data, models, the method module and the trainer.

Every Trainer comes from the one factory, kdexp.tools.trainer.build_trainer (the student's and a
teacher's alike), so both train under the same NaN guard and checkpoint writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from kdexp.callbacks import NonFiniteLossError
from kdexp.checks import check_run_options
from kdexp.data import ImageDataModule, build_datamodule
from kdexp.distributed import check_distributed_cfg
from kdexp.errors import SetupError, TrainingFailed
from kdexp.methods import DistillationModule, MethodChoice, build_method
from kdexp.models import BuiltModel, architecture_cfg, build_model, model_source
from kdexp.models.registry import UnknownModelError
from kdexp.optim import build_optimizer, build_scheduler
from kdexp.phases import phase
from kdexp.runner.performance import apply_performance, check_performance, data_options
from kdexp.runner.resume import FingerprintCheckpoint
from kdexp.runner.spec import CONFIG_ERRORS, RunSpec
from kdexp.runtimes import check_runtimes
from kdexp.teacher.provide import attach_stores, provide_run_teacher, record_teacher_weights
from kdexp.tools.config import plain
from kdexp.tools.trainer import build_trainer
from kdexp.tools.weights import load_student_weights

log = logging.getLogger("kdexp")


@dataclass
class Prepared:
    datamodule: ImageDataModule
    student: BuiltModel
    teacher: BuiltModel | None
    teacher_info: dict[str, Any] = field(default_factory=dict)


def check_config(spec: RunSpec) -> None:
    """Cheap checks of trainer, data, seed, method, optimizer and scheduler, before any data or
    teacher work (the method's options were checked when ``spec`` was read)."""
    cfg = spec.cfg
    check_run_options(cfg)
    check_logit_standardization(spec.method)
    check_distributed_cfg(plain(cfg.trainer), cfg.get("auto_resume", "slurm"))
    probe = build_optimizer([torch.zeros(1, requires_grad=True)], plain(cfg.optimizer))
    build_scheduler(probe, plain(cfg.scheduler), max_epochs=1, total_steps=1)
    spec.ckpt_path(missing_ok=spec.method_cls.chain is not None)
    check_runtimes(cfg.profile.get("runtimes"))  # profile.runtimes: known, and installed
    if cfg.get("init_weights"):
        if cfg.get("ckpt_path"):
            raise ValueError(
                "ckpt_path and init_weights are both set: ckpt_path continues a run, init_weights starts a "
                "new one from a checkpoint's weights; give one of them"
            )
        load_student_weights(cfg.init_weights)


def _names_kd_logits(cls: type) -> bool:
    """Whether ``cls`` or a base below DistillationModule has code of its own that calls
    ``kd_logits`` (a logit term besides the base KD term: DML's, DKD's, DIST's, LwF's)."""
    def names(code: Any) -> bool:
        return "kd_logits" in code.co_names or any(names(c) for c in code.co_consts if hasattr(c, "co_names"))

    own = [k for k in cls.__mro__ if issubclass(k, DistillationModule) and k is not DistillationModule]
    return any(names(f.__code__) for k in own for f in vars(k).values() if hasattr(f, "__code__"))


def check_logit_standardization(method: MethodChoice) -> None:
    """``method.logit_standardization=true`` z-scores the logits of a temperature-softmax term; a
    method with no such term at its weights would run unchanged, so say so (ValueError)."""
    options = method.options
    if not options.logit_standardization or _names_kd_logits(method.cls) or options.kd_weight > 0:
        return
    raise ValueError(
        f"method.logit_standardization=true changes nothing for method={method.name}: it z-scores the logits of "
        f"the temperature-softmax KD term, and method={method.name} has none at these weights (method.kd_weight="
        f"{options.kd_weight:g}). Give method.kd_weight > 0 to add a KD term to standardise, or leave "
        "logit_standardization=false"
    )


def build_role(
    role: str, cfg: dict[str, Any], num_classes: int, channels: int, input_shape: tuple[int, ...] | None = None
) -> BuiltModel:
    """``build_model`` for the teacher or the student, with errors that name ``<role>.name``;
    ``input_shape`` (C, H, W) reaches models that size themselves by it (kdexp.models.build_model)."""
    try:
        return build_model(cfg, num_classes, channels, input_shape)
    except UnknownModelError as err:
        raise ValueError(f"{role}.name={err.name!r} is not a registered model; registered models are: {err.choices}") from None
    except ValueError as err:
        raise ValueError(f"{role} ({role}.source={model_source(cfg)!r}, {role}.name={cfg.get('name')!r}): {err}") from None


def build_data(spec: RunSpec) -> ImageDataModule:
    """The data module, set up for fitting, with the performance switches that suit the method."""
    perf = plain(spec.cfg.get("performance"))
    datamodule = build_datamodule(plain(spec.cfg.data), **data_options(perf))
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_performance(perf, spec.method, datamodule)
    return datamodule


def prepare(spec: RunSpec) -> Prepared:
    """Data, a freshly initialised student and (if the method needs one) the frozen teacher."""
    cfg, method_cls = spec.cfg, spec.method_cls
    try:
        check_config(spec)
        pl.seed_everything(cfg.seed, workers=True)
        with phase("data"):
            datamodule = build_data(spec)
        num_classes, channels = datamodule.num_classes, datamodule.input_shape[0]
        student = build_role("student", plain(cfg.student), num_classes, channels, datamodule.input_shape)
        check_optimized_metric(spec, student.module)  # before a teacher trains, not after the run
        teacher, teacher_info = None, {}
        # Layer paths etc. are checked on the bare architectures, before a teacher is trained.
        teacher_arch = (
            build_role("teacher", architecture_cfg(plain(cfg.teacher)), num_classes, channels, datamodule.input_shape)
            if spec.needs_teacher
            else None
        )
        method_cls.check_models(student, teacher_arch, spec.options)
        if spec.needs_teacher:
            with phase("teacher"):
                teacher, teacher_info = provide_run_teacher(cfg, spec.method, teacher_arch, datamodule)
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err
    except NonFiniteLossError as err:  # the teacher's own training diverged (the same guard)
        raise TrainingFailed(f"the teacher's training: {err}; lower teacher.train.optimizer.lr") from None
    return Prepared(datamodule, student, teacher, teacher_info)


def result_fields(spec: RunSpec, student: Any) -> dict[str, set[str] | None]:
    """The numbers a single run's results.json will have, by section, as far as they are known
    before the run (None: a section whose fields are only known afterwards). Sections of their
    own that a method adds (``summarize``, cohorts, chains) are not listed."""
    from dataclasses import fields

    from kdexp.metric_names import ACCURACY_FIELDS
    from kdexp.profile import ModelProfile
    from kdexp.results import comparison

    cfg, method_cls = spec.cfg, spec.method_cls
    profiled = bool(cfg.profile.get("enabled", True))
    other_runtimes = profiled and any(str(r) != "torch" for r in cfg.profile.get("runtimes") or [])
    role = set(ACCURACY_FIELDS)
    if profiled:
        role |= {f.name for f in fields(ModelProfile) if f.type in ("int", "float", int, float)}
    student_fields: set[str] | None = None if other_runtimes else role | {"val_acc_top1", "acc_top1_best_epoch"}
    if student_fields is not None and hasattr(student, "memory_report"):
        student_fields |= set(student.memory_report())
    if student_fields is not None and hasattr(student, "integer_report") and profiled:
        student_fields = None  # its int8 model's numbers are measured
    has_teacher = spec.needs_teacher or method_cls.teacher_use.trained_with_student
    known: dict[str, set[str] | None] = {"run": None, "test_metrics": None, "student": student_fields}
    known["teacher"] = (None if other_runtimes else role) if has_teacher else set()
    known["comparison"] = (None if other_runtimes else {*comparison({}, {}), "agreement_top1"}) if has_teacher else set()
    return known


def check_optimized_metric(spec: RunSpec, student: Any) -> None:
    """``optimized_metric`` must name a number this run's results.json will have: checked before
    any teacher trains (ValueError naming the key and the numbers there will be)."""
    cfg, method_cls = spec.cfg, spec.method_cls
    key = str(cfg.get("optimized_metric") or "student.val_acc_top1")
    section, _, field = key.partition(".")
    known = result_fields(spec, student)
    own_sections = (
        method_cls.summarize is not DistillationModule.summarize or method_cls.members_field
        or method_cls.chain is not None
    )
    if (section in known and known[section] is None) or (section not in known and own_sections):
        return  # known only once the run has finished (entry.optimized_value checks it then)
    if field in (known.get(section) or ()):
        return
    choices = [f"{name}.{f}" for name, names in known.items() if names for f in sorted(names)]
    why = (
        f"method={cfg.method.name} has no teacher, so results.json has no {section} numbers"
        if section in ("teacher", "comparison") and not known[section]
        else f"this run's results.json will have no number {key}"
    )
    raise ValueError(
        f"optimized_metric={key!r}: {why}; choose one of: {', '.join(choices)} "
        "(the default is student.val_acc_top1, the student's final validation accuracy)"
    )


def make_module(spec: RunSpec, prep: Prepared) -> DistillationModule:
    cfg = spec.cfg
    try:
        module = build_method(
            spec.method, prep.student, prep.teacher, prep.datamodule.num_classes,
            prep.datamodule.input_shape, plain(cfg.optimizer), plain(cfg.scheduler),
        )
        record_teacher_weights(module, prep.teacher_info)  # load_from_checkpoint rebuilds the teacher
        perf = plain(cfg.get("performance"))
        apply_performance(module, prep.datamodule, perf, cfg.method.name, cfg.paths.output_dir)
        attach_stores(cfg, prep, module)
        return module
    except CONFIG_ERRORS as err:
        raise SetupError(str(err)) from err


def init_student(cfg: DictConfig, module: DistillationModule) -> None:
    """``init_weights=<.ckpt or student.pt>``: a new run that starts from those student weights
    (its own optimizer, schedule and epochs; ``ckpt_path=`` is the way to continue a run)."""
    path = cfg.get("init_weights")
    if not path:
        return
    try:
        state = load_student_weights(path)
        missing, unexpected = module.student.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that do not fit
        raise SetupError(f"init_weights={path!r} does not fit student.name={cfg.student.name!r}: {err}") from None
    except ValueError as err:
        raise SetupError(str(err)) from None
    if missing or unexpected:
        raise SetupError(
            f"init_weights={path!r} does not fit student.name={cfg.student.name!r}: missing keys "
            f"{list(missing)[:5]}, unexpected keys {list(unexpected)[:5]}"
        )
    log.info("Student initialised from %s (a new run: fresh optimizer, schedule and epochs)", path)


def make_trainer(cfg: DictConfig, fingerprint: dict[str, Any] | None = None) -> pl.Trainer:
    """The student's trainer: the configured callbacks and loggers, checkpoints carrying (with
    ``fingerprint``) what defines the run (kdexp.runner.resume)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if fingerprint is not None:
        callbacks.append(FingerprintCheckpoint(fingerprint, int(cfg.trainer.max_epochs)))
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    if not loggers:  # logger=none: a learning-rate monitor would have nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return build_trainer(trainer_kwargs(cfg.trainer), callbacks, loggers or False)


def trainer_kwargs(trainer: DictConfig | dict) -> dict[str, Any]:
    """Trainer arguments from a ``trainer`` node; nodes with a ``_target_`` (``trainer.profiler``
    of debug=profiler) become their objects."""
    kwargs = {k: v for k, v in plain(trainer).items() if k != "_target_"}
    return {k: instantiate(v) if isinstance(v, dict) and "_target_" in v else v for k, v in kwargs.items()}
