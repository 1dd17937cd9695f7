"""Runs that must learn: real Fashion-MNIST (Debian's dataset-fashion-mnist, installed by make)."""

import json
from pathlib import Path

import pytest

from kdexp.data.fashion_mnist import DEBIAN_ROOT

needs_fmnist = pytest.mark.skipif(
    not Path(DEBIAN_ROOT, "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (make test installs it)",
)
FAST_PROFILE = ("profile.min_run_time=0.05", "profile.throughput_batch=16")


@needs_fmnist
def test_student_alone_learns_fashion_mnist_in_one_epoch(kdexp_run, tmp_path: Path) -> None:
    outcome = kdexp_run(
        "method=vanilla", "trainer.max_epochs=1",
        "logger=none", *FAST_PROFILE, cache_dir=tmp_path / "cache", run_dir=tmp_path / "run",
    )
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["student"]["acc_top1"] > 0.80  # 10 classes: chance is 0.10


@needs_fmnist
@pytest.mark.slow
def test_default_distillation_beats_the_student_alone(kdexp_run, tmp_path: Path) -> None:
    """The README's claim, one seed: the default kd run vs the same student alone (~4 minutes)."""
    accuracy = {}
    for method in ("vanilla", "kd"):
        outcome = kdexp_run(f"method={method}", *FAST_PROFILE, cache_dir=tmp_path / "cache", run_dir=tmp_path / method)
        assert outcome.exit_code == 0, outcome.message
        results = json.loads((tmp_path / method / "results.json").read_text())
        accuracy[method] = results["student"]["acc_top1"]
    assert accuracy["kd"] > accuracy["vanilla"]
