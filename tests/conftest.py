"""Shared test helpers: tiny IDX files, and a way to run the CLI in a subprocess."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


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
    *overrides: str, cache_dir: Path, run_dir: Path, flags: tuple[str, ...] = (), timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``kdexp`` in a subprocess, as a user would, with its own cache and run folder."""
    env = {**os.environ, "KDEXP_CACHE_DIR": str(cache_dir), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "kdexp.train", *flags, f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
