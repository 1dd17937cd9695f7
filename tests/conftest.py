"""Shared test helpers: the tiny-run overrides, the config composed once, a method factory, a
few training steps, tiny IDX files, and a way to run the CLI in a subprocess."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import copy
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = str(REPO / "configs")

# A run of a few seconds on CPU: FakeData at 28x28, two small CNNs, one short epoch each.
TINY_RUN = (
    "data=fake",
    "data.image_shape=[1,28,28]",
    "data.train_size=64",
    "data.test_size=32",
    "teacher=cnn_small",
    "student=cnn_tiny",
    "trainer.max_epochs=1",
    "teacher.train.max_epochs=1",
    "profile.min_run_time=0.05",
    "profile.throughput_batch=8",
)
# A student-only run through the real CLI, for the crash, resume and safety tests: 4 steps of 16
# images per epoch, no teacher, no logger, no profiling (add trainer.max_epochs and the rest).
VANILLA_RUN = (
    "data=fake",
    "data.image_shape=[1,28,28]",
    "data.train_size=64",
    "data.test_size=32",
    "data.batch_size=16",
    "method=vanilla",
    "student=cnn_tiny",
    "logger=none",
    "profile.enabled=false",
)
SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
NO_SCHEDULE = {"name": "none"}


def compose_config(*overrides: str) -> DictConfig:
    """``configs/train.yaml`` composed with ``overrides`` as the CLI would, without running it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


@pytest.fixture(scope="package")
def tiny_config() -> DictConfig:
    """The tiny-run config, composed once for the whole test package (read it, do not change it;
    take a copy with the ``tiny_cfg`` fixture)."""
    return compose_config(*TINY_RUN)


@pytest.fixture
def tiny_cfg(tiny_config: DictConfig, tmp_path: Path) -> DictConfig:
    """A private copy of the tiny-run config whose paths all point into ``tmp_path``."""
    cfg = copy.deepcopy(tiny_config)
    with open_dict(cfg):
        cfg.paths = OmegaConf.create(
            {"root_dir": str(tmp_path), "data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
             "log_dir": str(tmp_path / "outputs"), "output_dir": str(tmp_path / "run")}
        )
    return cfg


def make_method(
    name: str = "kd",
    student: Any = "cnn_tiny",
    teacher: Any = "cnn_small",
    *,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    seed: int | None = 0,
    **options: Any,
):
    """A method module for tests: ``student``/``teacher`` are model names, model configs or
    BuiltModels (teacher None: none); ``options`` are the method's options."""
    from kdexp.methods import build_method
    from kdexp.models import BuiltModel, build_model

    def built(model: Any):
        if model is None or isinstance(model, BuiltModel):
            return model
        return build_model(model if isinstance(model, dict) else {"name": model}, num_classes, input_shape[0])

    if seed is not None:
        torch.manual_seed(seed)
    t, s = built(teacher), built(student)
    return build_method(
        {"name": name, **options}, s, t, num_classes, input_shape, optimizer or SGD, scheduler or NO_SCHEDULE
    )


def train_steps(
    module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.1, optimizer: torch.optim.Optimizer | None = None
) -> list[float]:
    """Train ``module`` in train mode for ``steps`` steps on the one batch ``x``, ``y`` with the
    weighted sum of its ``training_losses`` (``optimizer``, else SGD at ``lr`` with momentum 0.9 on
    its trainable parameters): the losses, one a step (for tests that a loss falls)."""
    if optimizer is None:
        optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    module.train()
    losses = []
    for _ in range(steps):
        _, terms = module.training_losses(x, y)
        loss = sum(w * v for w, v in terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as a gzip IDX file, the format of (Fashion-)MNIST."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion_mnist(tmp_path: Path) -> Path:
    """A Fashion-MNIST-shaped folder: 64 train and 32 test images whose class sets one bright row."""
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for split, n in (("train", 64), ("t10k", 32)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 50, size=(n, 28, 28))
        images[np.arange(n), 2 * labels + 4, :] = 255
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def run_cli(
    *overrides: str, cache_dir: Path, run_dir: Path, flags: tuple[str, ...] = (), timeout: int = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``kdexp`` in a subprocess, as a user would, with its own cache and run folder (and
    ``env`` added to the environment)."""
    env = {**os.environ, "KDEXP_CACHE_DIR": str(cache_dir), "PYTHONWARNINGS": "ignore", **(env or {})}
    cmd = [sys.executable, "-m", "kdexp.train", *flags, f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
