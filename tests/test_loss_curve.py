"""The epoch-mean training loss reaches every logger, even when an epoch is shorter than
``trainer.log_every_n_steps`` (issue: short runs logged no training-loss curve at all)."""

import csv
from pathlib import Path

import pytest

import kdexp

SHORT_RUN = ("data=fake", "data.image_shape=[1,28,28]", "data.train_size=128", "data.test_size=32",
             "data.batch_size=16", "method=vanilla", "student=cnn_tiny", "trainer.max_epochs=2",
             "profile.enabled=false", "logger=[tensorboard,csv]")


def test_a_2_epoch_run_of_8_batches_logs_a_training_loss_point_per_epoch(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    kdexp.run([*SHORT_RUN, f"paths.cache_dir={tmp_path / 'cache'}"], output_dir=run)
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_epoch")]
    assert [(r["epoch"], r["step"]) for r in rows] == [("0", "7"), ("1", "15")]  # 8 steps an epoch, 50 per log
    assert all(0 < float(r["train/loss_epoch"]) < 10 for r in rows)
    log = EventAccumulator(str(run / "tensorboard"))
    log.Reload()
    points = log.Scalars("train/loss_epoch")
    assert [p.step for p in points] == [7, 15]
    assert [p.value for p in points] == pytest.approx([float(r["train/loss_epoch"]) for r in rows])
