"""Who holds which training images: the public (unlabelled) set, then each client's private shard.

Non-IID clients follow the usual label-Dirichlet protocol (Hsu et al. 2019; FedDF's and NIID-Bench's
splits): for every class, the shares of its images across the K clients are drawn from
Dirichlet(α · 1_K). A draw that leaves a client with less than one batch is drawn again (up to
``DRAWS`` times, from the same seeded generator); the split is a pure function of (labels, seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DRAWS = 100  # Dirichlet draws tried before a client left with less than one batch is an error


@dataclass(frozen=True)
class DataSplit:
    """Row indices into the (materialised) training set: the public set and each client's shard."""

    public: np.ndarray
    clients: list[np.ndarray]

    def histograms(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """(clients, classes) image counts."""
        return np.stack([np.bincount(labels[rows], minlength=num_classes) for rows in self.clients])


def split_data(
    labels: np.ndarray, clients: int, alpha: float, iid: bool, public_size: int, min_size: int, seed: int
) -> DataSplit:
    """The public set (``public_size`` random images) and ``clients`` shards of the rest; a
    ValueError naming the key when the numbers cannot work."""
    n = len(labels)
    if public_size >= n:
        raise ValueError(
            f"federated.public_size={public_size} leaves no training data: the training set has {n} images "
            f"(after the data's validation hold-out); give public_size < {n}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    public, rest = np.sort(order[:public_size]), order[public_size:]
    if clients > len(rest):
        raise ValueError(
            f"federated.clients={clients} exceeds the {len(rest)} training images left for clients "
            f"(federated.public_size={public_size} held out): give fewer clients or a smaller public set"
        )
    shards = _iid(rest, clients, rng) if iid else _dirichlet(rest, labels, clients, alpha, min_size, rng)
    small = [(k, len(s)) for k, s in enumerate(shards) if len(s) < min_size]
    if small:
        who = ", ".join(f"client {k} has {size}" for k, size in small)
        raise ValueError(
            f"a client has fewer training images than one batch (data.batch_size={min_size}): {who} "
            f"(federated.clients={clients}, federated.alpha={alpha}, iid={iid}, {len(rest)} images); give fewer "
            "clients, a larger alpha, federated.iid=true or a smaller data.batch_size"
        )
    return DataSplit(public, [np.sort(s) for s in shards])


def _iid(rows: np.ndarray, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(rows), clients))


def _dirichlet(
    rows: np.ndarray, labels: np.ndarray, clients: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    by_class = [rows[labels[rows] == c] for c in np.unique(labels[rows])]
    best: list[np.ndarray] = []
    for _ in range(DRAWS):
        shards: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for members in by_class:
            members = rng.permutation(members)
            shares = rng.dirichlet(np.full(clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for k, part in enumerate(np.split(members, cuts)):
                shards[k].append(part)
        drawn = [np.concatenate(s) if s else np.empty(0, dtype=rows.dtype) for s in shards]
        if min(len(s) for s in drawn) >= min_size:
            return drawn
        if not best or min(map(len, drawn)) > min(map(len, best)):
            best = drawn
    return best  # the caller names the client that is too small


def dataset_tensors(dataset: torch.utils.data.Dataset, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset's images and labels as two tensors (read once; a client trains on rows of them)."""
    xs, ys = [], []
    for x, y, *_ in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys).long()
