"""Shared test helpers: the tiny-run overrides, the config composed once, a method factory, a
few training steps, tiny IDX files, ``kdexp <overrides>`` in this process (``kdexp_run``, with a
teacher cache shared by the session) and, where a process is what is under test, in a subprocess."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import warnings
from contextlib import redirect_stderr
from dataclasses import dataclass
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


# --- kdexp <overrides> in this process --------------------------------------------------------------
@dataclass
class Outcome:
    """What ``kdexp <overrides>`` ended with: the results (None on an error), the error, the exit
    status the CLI gives, the one paragraph it prints for the error, and what the run printed."""

    results: dict | None
    error: BaseException | None
    exit_code: int
    message: str  # the CLI's "kdexp: <kind>: <message>", whitespace joined (Rich and Hydra wrap lines)
    output: str  # the run's stdout and stderr, then its log lines at INFO and up (what Hydra's job logging shows)
    run_dir: Path
    cache_dir: Path

    def record(self, sub: str = "") -> dict:
        """``results.json`` of the run folder (or of its sub-run ``sub``)."""
        return json.loads((self.run_dir / sub / "results.json").read_text())


def cli_message(err: BaseException) -> str:
    """The paragraph ``kdexp`` prints for ``err`` (kdexp.errors.print_error for a KdexpError; a
    Hydra error's own text), with its whitespace joined."""
    from kdexp.errors import KdexpError, print_error

    if not isinstance(err, KdexpError):
        return " ".join(str(err).split())
    text = io.StringIO()
    with redirect_stderr(text):
        print_error(err)
    return " ".join(text.getvalue().split())


def cli_exit_code(err: BaseException | None) -> int:
    """The CLI's exit status for ``err``: a KdexpError's own code, else 1 (Hydra's, a crash)."""
    return 0 if err is None else getattr(err, "exit_code", 1)


class KeptGlobalState:
    """What a run in this process changes for the next test, and restores on exit: torch's
    threads, deterministic algorithms and random state, numpy's and Python's random state, the
    environment (PL_GLOBAL_SEED, KDEXP_SWEPT_KEYS, ...), signal handlers, warning filters and the
    handlers, filters and levels of the loggers that exist already."""

    def __enter__(self) -> "KeptGlobalState":
        self.threads, self.deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        self.rng = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
        self.environ = dict(os.environ)
        self.signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        loggers = [logging.getLogger(), *(l for l in logging.Logger.manager.loggerDict.values() if isinstance(l, logging.Logger))]
        self.loggers = [(l, l.level, list(l.handlers), list(l.filters), l.propagate, l.disabled) for l in loggers]
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic)
        torch.random.set_rng_state(self.rng[0])
        np.random.set_state(self.rng[1])
        random.setstate(self.rng[2])
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        for sig, handler in self.signals.items():
            signal.signal(sig, handler)
        self.warnings.__exit__(*exc)
        for logger, level, handlers, filters, propagate, disabled in self.loggers:
            logger.setLevel(level)
            logger.handlers[:], logger.filters[:] = handlers, filters
            logger.propagate, logger.disabled = propagate, disabled


@dataclass
class Command:
    """What a console script (``kdexp-eval``, ``kdexp-export``, ``kdexp-report``) ended with."""

    exit_code: int
    out: str
    err: str


def console_script(main: Any, *args: str, capfd: Any) -> Command:
    """A console script's ``main(argv)`` in this process, as its installed command runs it: the
    exit status (``sys.exit``'s or main's return value) and what it printed."""
    capfd.readouterr()
    with KeptGlobalState():
        try:
            code = main(list(args)) or 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    captured = capfd.readouterr()
    return Command(code, captured.out, captured.err)


HYDRA_RUN_DIR = "hydra.run.dir"  # run_dir= for the folder the config names (outputs/<date>/..., slurm/<job>)


class InProcess:
    """``kdexp <overrides>`` in this process, through the Python API (kdexp.run: compose, the
    command's checks and run, the failure record): the results, or the error with the message and
    exit status the CLI would give. Subprocesses only where a process is what is under test."""

    def __init__(self, tmp: Path, capfd: Any = None, cache_dir: Path | None = None) -> None:
        self.tmp, self.capfd, self.cache_dir, self.n = tmp, capfd, cache_dir, itertools.count()

    def __call__(
        self, *overrides: str, run_dir: Path | str | None = None, cache_dir: Path | None = None,
        env: dict[str, str] | None = None, config_dir: Path | str | None = None,
    ) -> Outcome:
        """Run; ``run_dir`` None: a new folder in ``tmp``; HYDRA_RUN_DIR: the composed one."""
        import pytorch_lightning  # noqa: F401 - its loggers exist before KeptGlobalState notes them

        import kdexp

        composed = run_dir == HYDRA_RUN_DIR
        run_dir = None if composed else Path(run_dir or self.tmp / f"run{next(self.n)}")
        cache = Path(cache_dir or self.cache_dir or self.tmp / "cache")
        if self.capfd is not None:
            self.capfd.readouterr()  # only this run's output
        with KeptGlobalState():
            os.environ.update({"KDEXP_CACHE_DIR": str(cache), **(env or {})})
            for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "KDEXP_SWEPT_KEYS", "HYDRA_FULL_ERROR"):
                if name not in (env or {}):
                    os.environ.pop(name, None)
            log = io.StringIO()  # the log lines Hydra's job logging would print (INFO and up)
            handler = logging.StreamHandler(log)
            handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
            logging.getLogger().addHandler(handler)
            logging.getLogger().setLevel(logging.INFO)
            try:
                results, error = kdexp.run(list(overrides), output_dir=run_dir, config_dir=config_dir), None
            except Exception as err:  # noqa: BLE001 - a KdexpError, Hydra's, or a crash: the test judges
                results, error = None, err
            message = cli_message(error) if error is not None else ""
        captured = self.capfd.readouterr() if self.capfd is not None else None
        output = (captured.out + captured.err if captured is not None else "") + log.getvalue()
        if composed:
            run_dir = Path(results["run"]["output_dir"]) if results else Path()
        return Outcome(results, error, cli_exit_code(error), message, output, run_dir, cache)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One teacher cache for the session's runs that do not test caching: the tiny teacher
    trains once, not once a test."""
    return tmp_path_factory.mktemp("shared_cache")


@pytest.fixture
def kdexp_run(tmp_path: Path, capfd) -> InProcess:
    """``kdexp_run(*overrides, run_dir=, cache_dir=, env=) -> Outcome``: a run in this process, in
    ``tmp_path`` (its own teacher cache unless ``cache_dir=``)."""
    return InProcess(tmp_path, capfd)


@pytest.fixture(scope="module")
def kdexp_runs(tmp_path_factory) -> InProcess:
    """Like ``kdexp_run``, for a module fixture that runs once for several tests (no output capture)."""
    return InProcess(tmp_path_factory.mktemp("runs"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``starts_first`` go to the front (a stable sort): under ``-n 2`` a long test
    that waits on other processes then overlaps the rest instead of running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("starts_first") is None)
