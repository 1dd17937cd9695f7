"""The shared base of every method: a student, an optional frozen teacher, CE + logits KD, metrics.

A method subclass adds its own loss terms in ``extra_losses``; the base weights and sums them with
``ce_weight * CE`` and ``kd_weight * kd_loss`` (Hinton), logs every raw term as ``train/<name>_loss``
and the weighted total as ``train/loss``, and reports student and teacher accuracy and their
top-1 agreement on the test set.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from kdexp.distributed import scaled_lr
from kdexp.losses import kd_loss, standardize_logits
from kdexp.methods.declarations import Chain, Federated, TeacherUse
from kdexp.methods.options import option, parse_options, positive, weight
from kdexp.metric_names import metric_name, metric_prefix
from kdexp.models import BuiltModel
from kdexp.optim import build_optimizer, build_scheduler


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1 accuracy, plus top-5 where there are more than 10 classes."""
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 10:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


def ensemble_probabilities(logits: list[Tensor]) -> Tensor:
    """The ensemble's prediction: the mean of the members' softmax (not a vote)."""
    return torch.stack([z.softmax(1) for z in logits]).mean(0)


class DistillationModule(pl.LightningModule):
    """Train ``student`` on ``ce_weight * CE + kd_weight * KD + Σ extra terms``.

    The teacher is held outside the module's registered children, so it is never in the
    optimizer, the checkpoint or the DDP wrapper; it stays in eval mode without gradients and runs
    under ``torch.no_grad()``.

    A method declares itself in class attributes, read by the run layer (which never looks a
    method up by name): its ``Options`` dataclass (defaults, types, ranges, search ranges), and
    the declarations below. ``method_name`` is set by ``@register_method``.
    """

    @dataclass
    class Options:
        """CE + Hinton KD: ``ce_weight · CE(s, y) + kd_weight · T² · KL(softmax(t/T) ‖ softmax(s/T))``."""

        ce_weight: float = weight(1.0, search=(0.0, 1.0))
        kd_weight: float = weight(0.0, search=(0.0, 1.0))
        temperature: float = positive(4.0, "the softmax temperature T divides the logits", search=(1.0, 10.0))
        logit_standardization: bool = option(
            False, "true: z-score student and teacher logits before the temperature softmax (Sun et al. 2024)"
        )

    method_name: ClassVar[str] = "base"
    teacher_use: ClassVar[TeacherUse] = TeacherUse()  # how it uses its teacher (kdexp.methods.declarations)
    # True where training batches must name each sample's index in the training set (CRD's memory
    # bank): ``setup`` then asks the kdexp data module to add it to every training batch, and the
    # step reads it as ``sample_index``.
    needs_sample_indices: ClassVar[bool] = False
    # A run that is a chain of runs (Born-Again, TAKD, class-incremental): see chain_links.
    chain: ClassVar[Chain | None] = None
    # A federated method (kdexp.methods.federated): its run is rounds of clients and a server.
    federated: ClassVar[Federated | None] = None
    # The results.json field that lists a method's several students, if it has several
    # ("cohort": DML's members, "generations": a chain's students); read by results and report.
    members_field: ClassVar[str | None] = None
    teacher_outputs: Any = None  # a TeacherOutputCache, attached by kdexp.runner.build where exact
    evaluate_teacher = True  # False while only the student is tested again (best-epoch test)
    teacher_test_logits: Any = None  # a kdexp.teacher.test_logits.TeacherTestLogits, attached by kdexp.runner.build
    # The current training batch's [index, dy, dx, flip] (lean path) or (B,) indices (per-sample
    # path with ``needs_sample_indices``), if named.
    _views: Tensor | None = None

    def __init__(
        self,
        student: BuiltModel,
        teacher: BuiltModel | None,
        num_classes: int,
        input_shape: tuple[int, int, int],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        **options: Any,
    ) -> None:
        super().__init__()
        self.options = self.options_in(options)
        if self.options.kd_weight > 0 and teacher is None and not self.teacher_use.trained_with_student:
            raise ValueError("method.kd_weight > 0 needs a teacher")
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "input_shape": list(input_shape),
                # The model configs: load_from_checkpoint rebuilds both (kdexp.saved.load).
                "models": {
                    "student": dict(student.cfg or {"name": student.name}),
                    "teacher": dict(teacher.cfg or {"name": teacher.name}) if teacher else None,
                },
                "module_class": type(self).__name__,
                "optimizer": dict(optimizer),
                "scheduler": dict(scheduler),
                "method": dataclasses.asdict(self.options),
            },
            logger=False,  # kdexp logs one HParams row, with the final metrics, at the end
        )
        for key, value in vars(self.options).items():  # module.temperature, module.hint_weight...
            setattr(self, key, value)
        self.input_shape = tuple(input_shape)  # (C, H, W): methods size their connectors with it
        self.student = student.module
        self.student_info = student
        self.teacher_info = teacher
        self._teacher_box = [teacher.module.eval().requires_grad_(False)] if teacher else []
        self.val_metrics = accuracy_metrics(num_classes).clone(prefix=metric_prefix("val"))
        self.test_student = accuracy_metrics(num_classes).clone(prefix=metric_prefix("test", "student"))
        if teacher is not None:
            self.test_teacher = accuracy_metrics(num_classes).clone(prefix=metric_prefix("test", "teacher"))
            self.test_agreement = MeanMetric()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, strict: bool = True, **kwargs: Any) -> Any:
        """Rebuild the module from a kdexp checkpoint alone: student, teacher (from its recorded
        weights file, or ``teacher=`` a BuiltModel) and options come from its hyperparameters."""
        from kdexp.methods.checkpoint import module_from_checkpoint

        return module_from_checkpoint(checkpoint_path, map_location=map_location, strict=strict, expected=cls, **kwargs)

    @classmethod
    def options_from(cls, values: Any) -> Any:
        """This method's ``Options``: ``values`` itself where it already is one (a run parses its
        options once, kdexp.methods.MethodChoice), else parsed from a dict (other keys, e.g.
        num_classes, ignored)."""
        if isinstance(values, cls.Options):
            return values
        names = {f.name for f in dataclasses.fields(cls.Options)}
        return parse_options(cls.Options, {k: v for k, v in values.items() if k in names}, cls.method_name)

    @classmethod
    def options_in(cls, kwargs: dict[str, Any]) -> Any:
        """The options a constructor was given: ``options=`` (parsed already, by build_method) or
        the option keys themselves (a direct call, load_from_checkpoint)."""
        given = kwargs.get("options")
        return cls.options_from(given if given is not None else kwargs)

    @classmethod
    def requires_teacher(cls, options: Any) -> bool:
        """Whether a run of this method with ``options`` (its Options, or a dict) needs a teacher."""
        return cls.teacher_use.needed or float(cls.options_from(options).kd_weight) > 0

    @classmethod
    def chain_links(cls, options: Any) -> list[dict[str, Any] | None]:
        """Chain methods: the student model config of each run after the teacher, in order
        (None = the run's own ``student``). Each run is distilled from the one before it."""
        raise NotImplementedError(f"{cls.__name__} is not a chain method")

    @classmethod
    def check_models(cls, student: BuiltModel, teacher: BuiltModel | None, options: Any) -> None:
        """Checks that need only the architectures (``options``: the method's Options, or a dict);
        run before any teacher is trained."""

    @classmethod
    def route_epochs(
        cls, options: Any, teacher_cfg: dict[str, Any], student_epochs: int
    ) -> list[int] | None:
        """The teacher epochs whose checkpoints (its training route) this method needs, or None
        for methods that need only the converged teacher (RCO). Raises ValueError on bad input."""
        return None

    def report_models(self) -> dict[str, nn.Module]:
        """The models the run profiles and reports, by role (metrics: ``test/<role>_acc``)."""
        return {"student": self.student, **({"teacher": self.teacher} if self.teacher is not None else {})}

    def summarize(self, results: dict[str, Any], test_metrics: dict[str, float], last_val: dict[str, Any]) -> None:
        """Add the method's own fields to a finished run's ``results`` (e.g. a cohort's ensemble)."""

    # --- the teacher -------------------------------------------------------------------------
    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher_box[0] if self._teacher_box else None

    def _place_teacher(self) -> None:
        if self.teacher is not None:
            dtype = next(self.student.parameters()).dtype
            self.teacher.to(device=self.device, dtype=dtype).eval()

    def on_fit_start(self) -> None:
        self._place_teacher()

    def on_validation_start(self) -> None:
        self._place_teacher()

    def on_test_start(self) -> None:
        self._place_teacher()
        if self.teacher_test_logits is not None and self.teacher is not None:
            self.teacher_test_logits.bind(self.teacher)  # the teacher as it is now

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # never leaves eval mode (BN statistics stay frozen)
        return self

    @torch.no_grad()
    def teacher_forward(self, x: Tensor) -> Tensor:
        return self.teacher(x)

    def test_teacher_logits(self, x: Tensor, index: Tensor | None) -> Tensor:
        """The teacher's logits for the test images ``x``: from the store of its test logits
        (kdexp.teacher.test_logits) when one is attached and single-process, else one forward pass."""
        store = self.teacher_test_logits
        if store is None or index is None or self.trainer.world_size > 1:
            return self.teacher_forward(x)
        return store.logits_for(index, x, self.teacher_forward)

    def on_test_end(self) -> None:
        if self.teacher_test_logits is not None and self.trainer.world_size == 1:
            self.teacher_test_logits.save_if_filled()

    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits for the training images ``x``: from the teacher-output cache when
        one is attached and the batch names its views, otherwise one forward pass."""
        views = self._views
        if self.teacher_outputs is not None and views is not None and views.dim() == 2:  # not bare indices
            return self.teacher_outputs.logits(x, views, self.teacher_forward)
        return self.teacher_forward(x)

    # --- sample indices (methods with ``needs_sample_indices``) ----------------------------------
    def setup(self, stage: str) -> None:
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if self.needs_sample_indices and datamodule is not None and hasattr(datamodule, "with_index"):
            datamodule.with_index = True  # before the training loader is built

    @property
    def sample_index(self) -> Tensor | None:
        """(B,) indices of the current training batch's samples in the training set, or None."""
        views = self._views
        return None if views is None else (views[:, 0] if views.dim() == 2 else views)

    # --- the loss ----------------------------------------------------------------------------
    def kd_logits(self, logits: Tensor) -> Tensor:
        """Logits as a logit-based KD term sees them: z-scored per sample with
        ``method.logit_standardization`` (Sun et al. 2024), else unchanged."""
        return standardize_logits(logits) if self.logit_standardization else logits

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def extra_losses(
        self, x: Tensor, y: Tensor, student_logits: Tensor, teacher_logits: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        """Method-specific terms: name → (weight, raw loss). Called after both forwards."""
        return {}

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        teacher_logits = self.teacher_logits(x) if self.teacher is not None else None
        if hasattr(self.student, "target_losses"):  # a student trained on its own loss (soft tree)
            return self.target_distribution_losses(x, y, teacher_logits)
        logits = self.student(x)
        terms = {"ce": (self.ce_weight, F.cross_entropy(logits, y))}
        if self.kd_weight > 0:
            terms["kd"] = (
                self.kd_weight,
                kd_loss(self.kd_logits(logits), self.kd_logits(teacher_logits), self.temperature),
            )
        terms.update(self.extra_losses(x, y, logits, teacher_logits))
        return logits, terms

    def target_distribution_losses(
        self, x: Tensor, y: Tensor, teacher_logits: Tensor | None
    ) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        """For a student with ``target_losses(x, targets)`` (the soft decision tree): its own loss
        in place of CE and KD, against the one-hot labels (weight ce_weight) and the teacher's
        soft targets softmax(t/T) (weight kd_weight, no T² factor: the tree's leaves are not
        tempered), plus the student's own extra terms (weight 1)."""
        targets = {"ce": F.one_hot(y, self.hparams["num_classes"]).float()}
        if self.kd_weight > 0:
            soft = self.kd_logits(teacher_logits.detach().float())  # z-scored with logit_standardization
            targets["kd"] = F.softmax(soft / self.temperature, dim=1)
        logits, losses = self.student.target_losses(x, targets)
        weights = {"ce": self.ce_weight, "kd": self.kd_weight}
        terms = {name: (weights.get(name, 1.0), value) for name, value in losses.items()}
        terms.update(self.extra_losses(x, y, logits, teacher_logits))
        return logits, terms

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x, y, *views = batch  # (x, y) or, from the lean data path, (x, y, views)
        self._views = views[0] if views else None
        try:
            logits, terms = self.training_losses(x, y)
        finally:
            self._views = None
        # the same sum, without the ops a weight of 1 and a start of 0 would add to every step's graph
        weighted = [value if weight == 1 else weight * value for weight, value in terms.values()]
        loss = functools.reduce(operator.add, weighted)
        # For error messages (kdexp.callbacks.FiniteLossGuard): the terms of the latest step.
        self.last_loss_terms = {name: (float(w), v.detach()) for name, (w, v) in terms.items()}
        # The epoch's mean loss, summed on the device (no sync per step); logged in on_train_epoch_end.
        total, steps = self._epoch_loss or (0.0, 0)
        self._epoch_loss = (total + loss.detach(), steps + 1)
        if self.logs_this_step():
            self.log("train/loss", loss, prog_bar=True)
            for name, (_, value) in terms.items():
                self.log(f"train/{name}_loss", value)
            self.log("train/acc", (logits.argmax(1) == y).float().mean())
        return loss

    _epoch_loss: tuple[Tensor | float, int] | None = None  # (sum of this epoch's train/loss, steps)

    def on_train_epoch_end(self) -> None:
        """``train/loss_epoch``: the mean ``train/loss`` over the epoch's steps, one point per epoch in
        every logger, so a run shorter than ``trainer.log_every_n_steps`` still has a loss curve."""
        if self._epoch_loss:
            total, steps = self._epoch_loss
            self.log(metric_name("train", metric="loss_epoch"), total / steps, sync_dist=True)
        self._epoch_loss = None

    def logs_this_step(self) -> bool:
        """Whether this training step's scalars are handed to Lightning: only on the steps its
        loggers write (every ``trainer.log_every_n_steps``), an epoch's last step (so
        ``callback_metrics`` hold train/* for callbacks) and every step of ``fast_dev_run``.
        Each ``self.log`` costs about 0.6 ms on the CPU (Lightning 2.6 moves the stored metric to
        the value's device on every call): logging 3-4 scalars every step cost 17% of a cnn_tiny
        step. The curves are unchanged: the loggers never saw the other steps."""
        trainer = self._trainer
        if trainer is None:
            return True
        return bool(trainer.fast_dev_run) or trainer.is_last_batch or trainer._logger_connector.should_update_logs

    # --- evaluation --------------------------------------------------------------------------
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_metrics.update(self.student(x), y)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y, *index = batch  # (x, y), or (x, y, test-set index) with a teacher-logits store
        student_logits = self.student(x)
        self.test_student.update(student_logits, y)
        self.log_dict(self.test_student)
        if self.teacher is not None and self.evaluate_teacher:
            teacher_logits = self.test_teacher_logits(x, index[0] if index else None)
            self.test_teacher.update(teacher_logits, y)
            agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
            self.test_agreement.update(agree)
            self.log_dict(self.test_teacher)
            self.log(metric_name("test", metric="agreement"), self.test_agreement)

    # --- optimisation ------------------------------------------------------------------------
    def optimizer_cfg(self) -> dict[str, Any]:
        """The optimizer config, with the linear LR scaling rule applied when it asks for it."""
        cfg = dict(self.hparams["optimizer"])
        if cfg.get("scale_lr_with_world_size") and self._trainer is not None:
            trainer = self.trainer
            lr = scaled_lr(
                cfg["lr"],
                world_size=trainer.world_size,
                batch_size=getattr(trainer.datamodule, "batch_size", None),
                reference_batch_size=cfg.get("reference_batch_size"),
                accumulate_grad_batches=trainer.accumulate_grad_batches,
            )
            rank_zero_info(f"Linear LR scaling: optimizer.lr {cfg['lr']:g} -> {lr:g} (world size {trainer.world_size})")
            cfg["lr"] = lr
        return cfg

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = build_optimizer(params, self.optimizer_cfg())
        scheduler = build_scheduler(
            optimizer,
            self.hparams["scheduler"],
            max_epochs=self.trainer.max_epochs or 1,
            total_steps=int(self.trainer.estimated_stepping_batches),
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class LogitDistillationModule(DistillationModule):
    """A method whose own terms see only the two models' logits, z-scored as the KD term sees them
    (:meth:`DistillationModule.kd_logits`): DIST, DKD. It needs a teacher, and uses it through its
    logits alone, so cached teacher outputs are exact. Subclasses implement :meth:`logit_losses`."""

    teacher_use = TeacherUse(logits_only=True)  # exact with cached teacher outputs (kdexp.teacher.outputs)

    def extra_losses(
        self, x: Tensor, y: Tensor, student_logits: Tensor, teacher_logits: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        return self.logit_losses(self.kd_logits(student_logits), self.kd_logits(teacher_logits), y)

    def logit_losses(self, s: Tensor, t: Tensor, y: Tensor) -> dict[str, tuple[float, Tensor]]:
        """The method's terms, name → (weight, raw loss), from the student's and the teacher's
        logits ``s``, ``t`` (as :meth:`kd_logits` gives them) and the labels ``y``."""
        raise NotImplementedError
