"""The federated methods: ``fedavg``, ``feddf``, ``fedmd``, ``fd``.

A federated run (``kdexp federated=<preset> method=<one of these>``) is rounds of clients and a
server (kdexp.federated; the run layer finds its runner through the ``federated`` declaration,
never by a name). Each module here is one client's learner: its ``training_losses`` is the
client's local loss on its private data (CE, plus FD's distillation to the other clients'
per-class logits); the server and client steps of each algorithm are in
kdexp.federated.algorithms, keyed by ``federated.algorithm``. The options below are the method's
published settings, each with its source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdexp.losses import kd_loss
from kdexp.methods.base import DistillationModule
from kdexp.methods.declarations import Federated, TeacherUse
from kdexp.methods.options import at_least, positive, switched_off, weight
from kdexp.methods.registry import register_method


class FederatedModule(DistillationModule):
    """One client's learner in a federated run: CE on its private data (``ce_weight``)."""

    @dataclass
    class Options(DistillationModule.Options):
        kd_weight: float = switched_off("federated methods distil through their own terms (FD's fd_weight, FedDF's and FedMD's server or digest steps); keep 0")
        temperature: float = positive(1.0, "T of the method's distillation softmax (FedDF's server step, FD's term): T = 1 in both papers")

        def __post_init__(self) -> None:
            if self.logit_standardization:
                raise ValueError(
                    "method.logit_standardization=true is not supported by the federated methods: they exchange raw "
                    "logits (or weights); leave it false"
                )

    teacher_use = TeacherUse(needed=False)  # the knowledge comes from the other clients, through the server


@register_method("fedavg")
class FedAvgModule(FederatedModule):
    """FedAvg (McMahan et al. 2017): clients train the global model on their data for
    ``federated.local_epochs``; the server averages their weights, weighted by their sample counts."""

    federated = Federated(algorithm="fedavg", shares="weights")


@register_method("feddf")
class FedDFModule(FederatedModule):
    """FedDF (Lin et al. 2020, "Ensemble Distillation for Robust Model Fusion in Federated
    Learning"): FedAvg, then the averaged server model is distilled on unlabelled public data from
    the mean of the client models' logits: ``T² · KL(softmax(mean_k z_k / T) ‖ softmax(z_server / T))``."""

    @dataclass
    class Options(FederatedModule.Options):
        # Lin et al. 2020, §4 / App. A: Adam, lr 1e-3, batch 128, up to 10^4 steps with early stopping
        # on a validation set; here a fixed step budget (no validation-based stopping).
        server_steps: int = at_least(500, 0, "server distillation steps per round (the paper: up to 10^4, early-stopped)")
        server_lr: float = positive(1e-3, "Adam's learning rate for the server distillation (the paper's 1e-3)")
        server_batch_size: int = at_least(128, 1, "public images per server distillation step (the paper's 128)")

    federated = Federated(algorithm="feddf", shares="weights", public_data=True)


@register_method("fedmd")
class FedMDModule(FederatedModule):
    """FedMD (Li & Wang 2019, "FedMD: Heterogenous Federated Learning via Model Distillation"):
    clients (of any architectures, ``federated.client_models``) send their logits on a public
    subset; the server averages them into the consensus; each client "digests" it (trains its
    logits towards the consensus, L1 loss) and "revisits" its private data (CE, local epochs)."""

    @dataclass
    class Options(FederatedModule.Options):
        # The authors' code (FedMD_clean, conf/*.json): N_alignment 5000, N_logits_matching_round 1,
        # logits_matching_batchsize 128 (MNIST), mean absolute error on the logits, Keras Adam (lr 1e-3).
        public_per_round: int = at_least(5000, 1, "public images drawn each round (the authors' N_alignment 5000)")
        digest_epochs: int = at_least(1, 0, "epochs of digest on the round's public subset (the authors' 1)")
        digest_batch_size: int = at_least(128, 1, "digest batch size (the authors' 128 on MNIST)")
        digest_lr: float = positive(1e-3, "Adam's learning rate for the digest (Keras' default, the authors' optimizer)")

    federated = Federated(algorithm="fedmd", shares="logits on public data", public_data=True,
                          global_model=False, heterogeneous=True)


@register_method("fd")
class FDModule(FederatedModule):
    """Federated Distillation (Jeong et al. 2018, "Communication-Efficient On-Device Machine
    Learning: Federated Distillation and Augmentation under Non-IID Private Data"): clients send
    their per-class mean logits (C × C numbers), never weights, and no public data is needed. Local
    loss: ``ce_weight · CE(s, y) + fd_weight · T² · KL(softmax(g_y / T) ‖ softmax(s / T))``, with
    ``g_y`` the other clients' mean logits for label y (the global mean without the client's own)."""

    @dataclass
    class Options(FederatedModule.Options):
        # Jeong et al. 2018, §2: the distillation regulariser is added to the loss unweighted.
        fd_weight: float = weight(1.0, "the weight of the distillation to the other clients' per-class logits (the paper: 1)")

    federated = Federated(algorithm="fd", shares="per-class logits", global_model=False)
    class_targets: Tensor | None = None  # (C, C) teacher logits per label; NaN rows: no other client has the label

    def training_losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, tuple[float, Tensor]]]:
        logits = self.student(x)
        terms = {"ce": (self.ce_weight, F.cross_entropy(logits, y))}
        targets = self.class_targets
        if targets is not None and self.fd_weight > 0:
            teacher = targets.to(logits.device)[y]
            known = ~torch.isnan(teacher).any(1)  # labels some other client has
            distil = kd_loss(logits[known], teacher[known], self.temperature) if known.any() else logits.sum() * 0
            terms["fd"] = (self.fd_weight, distil * known.float().mean())  # a mean over the whole batch
        return logits, terms
