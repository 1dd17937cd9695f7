"""What every process of a federated run builds alike from the run's config: the data (read once,
as tensors), the split, each client's model, the seeds. The local engine builds it once; under
Flower the ServerApp and every ClientApp build it from the same resolved config, so a client's
shard, model and randomness are the same wherever it runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Subset

from kdexp.data import build_datamodule
from kdexp.federated.settings import FederatedSettings
from kdexp.federated.split import DataSplit, dataset_tensors, split_data
from kdexp.methods import DistillationModule, MethodChoice, build_method, choose_method
from kdexp.models import build_model

log = logging.getLogger("kdexp")


def plain_training_set(datamodule: Any) -> Any:
    """The training images without augmentation (the validation split's un-augmented copy of the
    training set, at the training rows), where the data module keeps one."""
    train, val = datamodule.train_set, datamodule.val_set
    if isinstance(train, Subset) and isinstance(val, Subset) and val.dataset is not train.dataset:
        return Subset(val.dataset, train.indices)
    return train


@dataclass
class FederatedExperiment:
    """The shared facts of a run; ``cfg`` is the run's resolved config as plain containers."""

    cfg: dict[str, Any]
    settings: FederatedSettings
    method: MethodChoice
    num_classes: int
    input_shape: tuple[int, int, int]
    train: tuple[Tensor, Tensor]
    public_x: Tensor
    val: tuple[Tensor, Tensor] | None
    test: tuple[Tensor, Tensor]
    split: DataSplit

    @classmethod
    def build(cls, cfg: dict[str, Any], settings: FederatedSettings | None = None) -> FederatedExperiment:
        settings = settings or FederatedSettings.read(cfg["federated"])
        method = choose_method(cfg["method"])
        data_cfg = cfg["data"]
        if data_cfg.get("augment"):
            log.warning("data.augment=true: federated clients train on the un-augmented images (the augmentation is not applied)")
        datamodule = build_datamodule(data_cfg, lean=False)
        datamodule.prepare_data()
        datamodule.setup("fit")
        train = dataset_tensors(plain_training_set(datamodule))
        if settings.train_size is not None and settings.train_size < len(train[1]):  # a smaller pool, seed-independent
            rows = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(0))[: settings.train_size].sort().values
            train = (train[0][rows], train[1][rows])
        test = dataset_tensors(datamodule.test_set)
        val = dataset_tensors(datamodule.val_set) if int(data_cfg.get("val_size") or 0) > 0 else None
        split = split_data(
            train[1].numpy(), settings.clients, float(settings.alpha), settings.iid, settings.public_size,
            int(data_cfg["batch_size"]), int(cfg["seed"]),
        )
        public_x = train[0][torch.from_numpy(split.public)]  # the images only: public labels are never used
        return cls(cfg, settings, method, datamodule.num_classes, tuple(datamodule.input_shape), train, public_x, val, test, split)

    # --- seeds and participants ----------------------------------------------------------------
    @property
    def seed(self) -> int:
        return int(self.cfg["seed"])

    def seed_of(self, *parts: int) -> int:
        """A seed for one purpose (round, client, step), a pure function of the run's seed."""
        return int(np.random.SeedSequence([self.seed, *parts]).generate_state(1)[0])

    def participants(self, round_: int) -> list[int]:
        """The clients of round ``round_`` (1-based): all, or a seeded sample of clients_per_round."""
        k = self.settings.per_round
        if k >= self.settings.clients:
            return list(range(self.settings.clients))
        rng = np.random.default_rng(self.seed_of(round_, 0))
        return sorted(int(c) for c in rng.choice(self.settings.clients, size=k, replace=False))

    # --- clients' data and models --------------------------------------------------------------
    def client_data(self, client: int) -> tuple[Tensor, Tensor]:
        rows = torch.from_numpy(self.split.clients[client])
        return self.train[0][rows], self.train[1][rows]

    def model_cfg(self, client: int | None) -> dict[str, Any]:
        """A client's model config (``federated.client_models``), or the student's (the server's)."""
        models = self.settings.client_models
        return dict(models[client]) if models is not None and client is not None else dict(self.cfg["student"])

    def new_module(self, client: int | None) -> DistillationModule:
        """A freshly initialised learner: the method's module around the client's (or, client None,
        the server's) model; its initialisation seeded by (seed, client), the global RNG untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_of(0, 0 if client is None else client + 1))  # 0: the server
            built = build_model(self.model_cfg(client), self.num_classes, self.input_shape[0], self.input_shape)
            return build_method(
                self.method, built, None, self.num_classes, self.input_shape, self.cfg["optimizer"], self.cfg["scheduler"]
            )

    def client_eval(self, round_: int) -> tuple[Tensor, Tensor]:
        """The test images a client is scored on in ``round_``: the first client_eval_size, or all
        of them (in the last round always all)."""
        size = self.settings.client_eval_size
        if size is None or round_ >= self.settings.rounds:
            return self.test
        return self.test[0][:size], self.test[1][:size]
