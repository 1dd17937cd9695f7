"""iCaRL's exemplar memory (Rebuffi et al., CVPR 2017): herding selection, a fixed total budget
balanced across classes, and the nearest-mean-of-exemplars (NME) classifier.

Features are the network's penultimate activations (the classifier's input), L2-normalised, as in
the paper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from kdexp.tools.files import write_json

MEMORY_FILE = "memory.json"


def herding(features: Tensor, m: int) -> list[int]:
    """iCaRL's Algorithm 4: pick ``m`` rows of ``features`` (n, d) one at a time, each the row
    that brings the mean of the picks closest to the mean μ of all rows:

        p_k = argmin_x ‖ μ − (φ(x) + Σ_{j<k} φ(p_j)) / k ‖,   without repeats.

    Returns row indices in the order picked (a prefix of it is the best smaller set)."""
    n = features.shape[0]
    features = features.double()
    mean = features.mean(0)
    running = torch.zeros_like(mean)
    available = torch.ones(n, dtype=torch.bool)
    picked: list[int] = []
    for k in range(1, min(m, n) + 1):
        distance = (mean - (running + features) / k).norm(dim=1)
        distance[~available] = float("inf")
        i = int(distance.argmin())
        picked.append(i)
        available[i] = False
        running += features[i]
    return picked


@torch.no_grad()
def penultimate_features(
    model: nn.Module, classifier: str, dataset: Dataset, batch_size: int = 256, device: torch.device | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """(L2-normalised features φ(x) (n, d), logits (n, C), labels (n,)) of every sample of
    ``dataset``, in eval mode; φ is the input of the module at path ``classifier``."""
    device = device or next(model.parameters()).device
    captured: list[Tensor] = []
    hook = model.get_submodule(classifier).register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0].flatten(1))
    )
    was_training = model.training
    model.eval()
    feats, logits, labels = [], [], []
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            logits.append(model(x.to(device)).float().cpu())
            feats.append(F.normalize(captured.pop().float(), dim=1).cpu())
            labels.append(torch.as_tensor(y))
    finally:
        hook.remove()
        model.train(was_training)
    if not feats:
        return torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


def nme_predict(features: Tensor, class_means: Tensor) -> Tensor:
    """Nearest mean of exemplars: argmin_y ‖φ(x) − μ_y‖ for every row of ``features`` (n, d);
    ``class_means`` (C, d) in position order."""
    return torch.cdist(features.float(), class_means.float()).argmin(1)


@dataclass
class ExemplarMemory:
    """At most ``budget`` training images, ``budget // classes seen`` per class, in herding order.

    ``exemplars`` maps an original class label to indices into the base data module's training
    set; ``means`` holds each class's mean exemplar feature (normalised), the NME prototypes.
    """

    budget: int
    exemplars: dict[int, list[int]] = field(default_factory=dict)
    means: dict[int, list[float]] = field(default_factory=dict)

    def per_class(self, num_classes: int) -> int:
        return self.budget // max(num_classes, 1)

    def __len__(self) -> int:
        return sum(len(v) for v in self.exemplars.values())

    def indices(self) -> Tensor:
        """Every stored training-set index (the old classes' images that join a step's data)."""
        return torch.tensor([i for c in sorted(self.exemplars) for i in self.exemplars[c]], dtype=torch.int64)

    def reduce(self, m: int) -> None:
        """iCaRL's ReduceExemplarSet: keep each class's first ``m`` (the herding order's best)."""
        self.exemplars = {c: idx[:m] for c, idx in self.exemplars.items()}

    def add(self, label: int, candidates: Tensor, features: Tensor, m: int) -> None:
        """iCaRL's ConstructExemplarSet: herd ``m`` of a class's ``candidates`` (train-set
        indices) from their ``features`` (rows in the same order)."""
        picked = herding(features, m)
        self.exemplars[int(label)] = [int(candidates[i]) for i in picked]

    def set_mean(self, label: int, features: Tensor) -> None:
        self.means[int(label)] = F.normalize(features.mean(0), dim=0).tolist()

    def class_means(self, order: list[int]) -> Tensor:
        """(C, d) NME prototypes of the classes in ``order`` (positions)."""
        return torch.tensor([self.means[c] for c in order])

    def save(self, folder: Path) -> None:
        data = {
            "budget": self.budget,
            "exemplars": {str(c): v for c, v in sorted(self.exemplars.items())},
            "means": {str(c): v for c, v in sorted(self.means.items())},
        }
        write_json(folder / MEMORY_FILE, data)

    @classmethod
    def load(cls, folder: Path) -> ExemplarMemory:
        data = json.loads((folder / MEMORY_FILE).read_text())
        return cls(
            int(data["budget"]),
            {int(c): list(v) for c, v in data["exemplars"].items()},
            {int(c): list(v) for c, v in data["means"].items()},
        )
