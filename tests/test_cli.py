"""The CLI end to end, in a subprocess, as a user runs it: results.json, TensorBoard, the cache."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_cli

QUICK = (
    "data=fake",
    "data.image_shape=[1,28,28]",
    "data.train_size=64",
    "data.test_size=32",
    "teacher=cnn_small",
    "student=cnn_tiny",
    "trainer.max_epochs=2",
    "teacher.train.max_epochs=1",
    "profile.min_run_time=0.05",
    "profile.throughput_batch=8",
    "trainer.log_every_n_steps=1",
)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two identical kd runs sharing a teacher cache: the first trains the teacher."""
    tmp = tmp_path_factory.mktemp("cli")
    cache = tmp / "cache"
    for name in ("first", "second"):
        proc = run_cli(*QUICK, cache_dir=cache, run_dir=tmp / name)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "first", tmp / "second", cache


def test_results_json_has_teacher_student_and_ratios(two_runs) -> None:
    results = json.loads((two_runs[0] / "results.json").read_text())
    assert results["run"]["method"] == "kd" and results["run"]["teacher_source"]["source"] == "trained"
    for role, name, params in (("teacher", "cnn_small", 24058), ("student", "cnn_tiny", 6274)):
        stats = results[role]
        assert results["run"][role] == name
        assert stats["params"] == params
        assert 0.0 <= stats["acc_top1"] <= 1.0
        assert "acc_top5" not in stats  # 10 classes: top-5 is not reported
        assert stats["macs"] > 0 and stats["size_mb"] > params * 4 / 1e6
        assert stats["latency_ms_b1"] > 0 and stats["latency_iqr_ms_b1"] >= 0
        assert stats["throughput_ips"] > 0 and stats["threads"] >= 1
    cmp = results["comparison"]
    assert cmp["compression_params"] == pytest.approx(24058 / 6274)
    assert cmp["macs_ratio"] == pytest.approx(results["teacher"]["macs"] / results["student"]["macs"])
    assert 0.0 <= cmp["agreement_top1"] <= 1.0
    assert cmp["acc_gap_top1"] == pytest.approx(
        results["teacher"]["acc_top1"] - results["student"]["acc_top1"]
    )
    assert (two_runs[0] / "student.pt").is_file()
    # last.ckpt is written at every epoch's end (a crash keeps the last finished epoch), beside
    # the epoch with the best validation accuracy, whose test accuracy results.json reports.
    assert (two_runs[0] / "checkpoints" / "last.ckpt").is_file()
    (best,) = [p.name for p in (two_runs[0] / "checkpoints").glob("epoch=*.ckpt")]
    assert best == f"epoch={results['run']['best_epoch'] - 1}-step={2 * results['run']['best_epoch']}.ckpt"
    assert 0.0 <= results["student"]["acc_top1_best_epoch"] <= 1.0
    assert 0.0 <= results["student"]["val_acc_top1"] <= 1.0


def test_tensorboard_has_curves_and_an_hparams_row(two_runs) -> None:
    events = EventAccumulator(str(two_runs[0] / "tensorboard"))  # reads every event file there
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "val/acc", "final/student_acc_top1", "final/teacher_acc_top1"} <= scalars
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_second_run_reuses_the_cached_teacher(two_runs) -> None:
    first = json.loads((two_runs[0] / "results.json").read_text())
    second = json.loads((two_runs[1] / "results.json").read_text())
    assert second["run"]["teacher_source"]["source"] == "cache"
    assert second["run"]["teacher_source"]["path"] == first["run"]["teacher_source"]["path"]
    assert len(list(two_runs[2].glob("*.pt"))) == 1
    assert not (two_runs[1] / "teacher").exists()  # no teacher training logs the second time
    # Same teacher, same seed: the teacher's measured accuracy is identical.
    assert second["teacher"]["acc_top1"] == first["teacher"]["acc_top1"]


def test_wrong_choice_lists_the_options(tmp_path: Path) -> None:
    proc = run_cli("teacher=resnet1000", cache_dir=tmp_path, run_dir=tmp_path / "r")
    assert proc.returncode == 2
    assert "teacher.name='resnet1000' is not a registered model" in proc.stderr and "resnet32x4" in proc.stderr


def test_bad_checkpoint_fails_before_training(tmp_path: Path) -> None:
    proc = run_cli(*QUICK, f"teacher.checkpoint={tmp_path}/missing.pt", cache_dir=tmp_path, run_dir=tmp_path / "r")
    assert proc.returncode == 2
    assert "teacher.checkpoint=" in proc.stderr and "does not exist" in proc.stderr
    assert "Epoch" not in proc.stdout + proc.stderr


def test_print_config(tmp_path: Path) -> None:
    proc = run_cli(
        "method.temperature=2", flags=("--cfg", "job"), cache_dir=tmp_path, run_dir=tmp_path / "r"
    )
    assert proc.returncode == 0
    assert "temperature: 2" in proc.stdout and "name: fashion_mnist" in proc.stdout


def test_resume_from_last_checkpoint(two_runs, tmp_path: Path) -> None:
    """ckpt_path= continues a run where its last checkpoint left it, with the cached teacher."""
    cache = two_runs[2]
    constant_lr = (*QUICK, "scheduler=none")  # a one-cycle schedule cannot be extended
    proc = run_cli(*constant_lr, "trainer.max_epochs=1", cache_dir=cache, run_dir=tmp_path / "a")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(
        *constant_lr, "trainer.max_epochs=3", f"ckpt_path={tmp_path}/a/checkpoints/last.ckpt",
        cache_dir=cache, run_dir=tmp_path / "resumed",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Restoring states from the checkpoint" in proc.stdout + proc.stderr
    results = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert results["run"]["epochs"] == 3 and results["run"]["teacher_source"]["source"] == "cache"
