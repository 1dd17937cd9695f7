"""``crd``: Tian et al. 2020, "Contrastive Representation Distillation"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kdexp.connectors import ContrastMemory
from kdexp.losses import crd_nce_loss
from kdexp.methods.feature import EmbeddingDistillationModule
from kdexp.methods.options import at_least, option, positive, weight
from kdexp.methods.registry import register_method
from kdexp.models import BuiltModel

MOMENTUM_WHY = "the memory's μ; RepDistiller 0.5"


@register_method("crd")
class CRDModule(EmbeddingDistillationModule):
    """loss = ce_weight · CE + kd_weight · KD + crd_weight · (NCE_s + NCE_t).

    Embedding heads ``g_s``, ``g_t`` (linear to ``feat_dim`` + L2 normalisation, both trained)
    map each model's penultimate embedding to ``v_s``, ``v_t``. A memory bank
    (:class:`~kdexp.connectors.ContrastMemory`) keeps one momentum-averaged embedding per training
    sample and side. For each sample i, the student anchor ``v_s`` is scored against the teacher
    memory rows of i (positive) and of ``nce_negatives`` K samples of other classes (negatives),
    ``h = exp(m · v / τ) / Z_t``, and symmetrically the teacher anchor against the student memory;
    each set of scores gives the NCE loss of :func:`kdexp.losses.crd_nce_loss`. Then the rows of
    the batch's samples are updated, ``m ← normalize(μ m + (1 - μ) v)``.

    Needs each sample's index in the training set (``needs_sample_indices``): every kdexp data
    module then delivers it (lean batches name it in their views; the per-sample path adds it).
    The bank (memories, the labels seen, the training rows, the normalisers Z fixed on the first
    batch) is a set of registered buffers, built in ``setup`` from the data module's
    ``sample_rows()`` (a sample's index is its row in the full training set, also when
    ``data.val_size`` holds some rows out; negatives come from the training rows): it is saved in every
    checkpoint and a resumed run continues with it exactly; a checkpoint whose bank size differs
    from the training set's size is refused with a clear error.

    DDP: every rank holds the whole bank. Each step the ranks all-gather their (v_s, v_t, index,
    label) and every rank applies the same momentum update for the whole global batch, so the
    banks stay identical (each row is updated by the rank's own samples' embeddings, seen by all);
    Z is the mean over ranks of the first batch's scores. Negatives are drawn on each rank from
    its own RNG stream. (A sample padded twice into one step by the distributed sampler updates
    its row once, with one of its two embeddings.)

    Defaults (RepDistiller CIFAR-100): ``crd_weight=0.8`` (β), ``feat_dim=128``,
    ``nce_negatives=16384``, ``nce_temperature=0.07``, ``nce_momentum=0.5``, ``ce_weight=1``,
    ``kd_weight=0`` (``method.kd_weight=1`` is the table's CRD+KD row), on the classifier's input.
    Negatives are drawn from the other classes (RepDistiller's CIFAR sampler); a sample's class is
    known once it has been seen, so in the first epoch an unseen same-class sample can be drawn.
    """

    @dataclass
    class Options(EmbeddingDistillationModule.Options):
        crd_weight: float = weight(0.8, search=(0.08, 8.0, "log"))  # β
        feat_dim: int = at_least(128, 1, "the embedding size; RepDistiller 128")
        nce_negatives: int = at_least(16384, 1, "negatives per sample K; RepDistiller 16384")
        nce_temperature: float = positive(0.07, "τ; RepDistiller 0.07")
        nce_momentum: float = option(0.5, MOMENTUM_WHY, low=0.0)

        def __post_init__(self) -> None:
            if not self.nce_momentum < 1:
                raise ValueError(f"method.nce_momentum must be in [0, 1) ({MOMENTUM_WHY}), got {self.nce_momentum!r}")

    needs_sample_indices = True

    def __init__(self, student: BuiltModel, teacher: BuiltModel, **kwargs: Any) -> None:
        super().__init__(student, teacher, **kwargs)
        self.embed_s, self.embed_t = self.embedding_heads(self.feat_dim)
        self.contrast: ContrastMemory | None = None  # sized by the training set, in setup

    # --- the memory bank -------------------------------------------------------------------------
    def _build_memory(self, size: int, rows: list[int] | None = None) -> None:
        self.contrast = ContrastMemory(
            self.feat_dim, size, rows, self.nce_negatives, self.nce_temperature, self.nce_momentum
        ).to(self.embed_s.linear.weight.device)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.contrast is not None:
            return
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if not hasattr(datamodule, "sample_rows"):
            raise ValueError(
                "method 'crd' needs a kdexp data module (its memory bank has one row per training "
                "sample, so it must know the training set's size and each batch's sample indices); "
                "pass datamodule=... to the trainer."
            )
        self._build_memory(*datamodule.sample_rows())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        saved, rows = state.get("contrast.memory_student"), state.get("contrast.rows")
        if saved is None or rows is None:
            return
        if self.contrast is None:  # loaded outside a trainer: take the bank's shape from the file
            self._build_memory(saved.shape[0], rows.tolist())
        elif saved.shape != self.contrast.memory_student.shape or not torch.equal(
            rows.cpu(), self.contrast.rows.cpu()
        ):
            raise ValueError(
                f"method 'crd': the checkpoint's memory bank has {saved.shape[0]} rows of size "
                f"{saved.shape[1]} for {rows.numel()} training samples, but this run has "
                f"{self.contrast.memory_student.shape[0]} rows for {self.contrast.num_data} training "
                f"samples (method.feat_dim={self.feat_dim}); the data (data.*, e.g. "
                "val_size or train_size) or feat_dim changed since the checkpoint. Resume with the "
                "settings it was trained with, or start a new run."
            )

    # --- the loss --------------------------------------------------------------------------------
    def extra_losses(
        self, x: Tensor, y: Tensor, student_logits: Tensor, teacher_logits: Tensor | None
    ) -> dict[str, tuple[float, Tensor]]:
        if self._current is None:
            raise RuntimeError("extra_losses is only available inside training_losses")
        index = self.sample_index
        if index is None or self.contrast is None:
            raise RuntimeError(
                "method 'crd': this training batch carries no sample indices; train with a kdexp "
                "data module, which adds them for methods with needs_sample_indices."
            )
        s_hooks, t_hooks = self._current
        fs, ft = self._collect(s_hooks, "student")[0], self._collect(t_hooks, "teacher")[0]
        memory = self.contrast
        with torch.autocast(self.device.type, enabled=False):  # exp(score / 0.07) needs float32
            v_s, v_t = self.embed_s(fs.float()), self.embed_t(ft.float())
            negatives = memory.negatives(index, y)
            out_s, out_t = memory.scores(v_s, v_t, index, negatives)
            if memory.normalizers[0] < 0:  # Z fixed once, from the first batch (all ranks')
                z = torch.stack([out_s.mean(), out_t.mean()]).detach()
                memory.normalizers.copy_(self._gather(z).reshape(-1, 2).mean(0) * memory.num_data)
            loss = crd_nce_loss(out_s / memory.normalizers[0], memory.num_data) + crd_nce_loss(
                out_t / memory.normalizers[1], memory.num_data
            )
            gathered = [self._gather(t).reshape(-1, *t.shape[1:]) for t in (v_s.detach(), v_t.detach(), index, y)]
            memory.update(*gathered)
        return {"crd": (self.crd_weight, loss)}

    def _gather(self, tensor: Tensor) -> Tensor:
        """All ranks' ``tensor`` stacked (world, ...) under a trainer; the tensor itself outside one."""
        return self.all_gather(tensor) if self._trainer is not None else tensor
