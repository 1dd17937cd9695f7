"""The CLI end to end: results.json, TensorBoard, the cache. Two runs start the real CLI, as a user
runs it (its piped output, train.log, the exit status); the rest run in this process (kdexp_run)."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY_RUN, run_cli

QUICK = (*TINY_RUN, "trainer.max_epochs=2", "trainer.log_every_n_steps=1")  # the later value wins


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two identical kd runs sharing a teacher cache: the first trains the teacher."""
    tmp = tmp_path_factory.mktemp("cli")
    cache = tmp / "cache"
    for name, loggers in (("first", "tensorboard"), ("second", "[tensorboard,csv]")):
        proc = run_cli(*QUICK, f"logger={loggers}", cache_dir=cache, run_dir=tmp / name)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (tmp / f"{name}.stdout").write_text(proc.stdout)
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
    # Issue 17, finding 3: a few headline final numbers, not 29 single-point charts ...
    assert len([t for t in scalars if t.startswith("final/")]) <= 10
    # ... and the teacher's own run logs its accuracy as the teacher's.
    teacher = EventAccumulator(str(two_runs[0] / "teacher"))
    teacher.Reload()
    assert "test/teacher_acc" in teacher.Tags()["scalars"] and "test/student_acc" not in teacher.Tags()["scalars"]


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


def test_bad_checkpoint_fails_before_training(kdexp_run, tmp_path: Path) -> None:
    outcome = kdexp_run(*QUICK, f"teacher.checkpoint={tmp_path}/missing.pt", cache_dir=tmp_path, run_dir=tmp_path / "r")
    assert outcome.exit_code == 2
    assert "teacher.checkpoint=" in outcome.message and "does not exist" in outcome.message
    assert "train/loss" not in outcome.output  # nothing trained (no epoch line)


def test_print_config(tmp_path: Path) -> None:
    proc = run_cli(
        "method.temperature=2", flags=("--cfg", "job"), cache_dir=tmp_path, run_dir=tmp_path / "r"
    )
    assert proc.returncode == 0
    assert "temperature: 2" in proc.stdout and "name: fashion_mnist" in proc.stdout


def test_resume_from_last_checkpoint(two_runs, kdexp_run, tmp_path: Path) -> None:
    """ckpt_path= continues a run where its last checkpoint left it, with the cached teacher."""
    cache = two_runs[2]
    constant_lr = (*QUICK, "scheduler=none")  # a one-cycle schedule cannot be extended
    outcome = kdexp_run(*constant_lr, "trainer.max_epochs=1", cache_dir=cache, run_dir=tmp_path / "a")
    assert outcome.exit_code == 0, outcome.message
    outcome = kdexp_run(
        *constant_lr, "trainer.max_epochs=3", f"ckpt_path={tmp_path}/a/checkpoints/last.ckpt",
        cache_dir=cache, run_dir=tmp_path / "resumed",
    )
    assert outcome.exit_code == 0, outcome.message
    assert "Restoring states from the checkpoint" in outcome.output
    results = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert results["run"]["epochs"] == 3 and results["run"]["teacher_source"]["source"] == "cache"


def _csv_final(run_dir: Path) -> dict[str, str]:
    import csv

    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {k: v for row in rows for k, v in row.items() if v}  # the last value of every column


def test_two_loggers_at_once_both_get_curves_and_final_numbers(two_runs) -> None:
    """Issue 17, finding 6: any logger besides TensorBoard crashed at the end of the run."""
    second = two_runs[1]
    results = json.loads((second / "results.json").read_text())
    final = _csv_final(second)
    assert "train/loss" in final and "val/acc" in final
    assert float(final["final/student_acc_top1"]) == pytest.approx(results["student"]["acc_top1"])
    assert "seed: 0" in (second / "csv" / "hparams.yaml").read_text()
    events = EventAccumulator(str(second / "tensorboard"))
    events.Reload()
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_csv_logger_alone(kdexp_run, tmp_path: Path) -> None:
    outcome = kdexp_run(*QUICK, "method=vanilla", "logger=csv", cache_dir=tmp_path / "cache", run_dir=tmp_path / "run")
    assert outcome.exit_code == 0, outcome.message
    assert "Traceback" not in outcome.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert float(_csv_final(tmp_path / "run")["final/student_acc_top1"]) == pytest.approx(results["student"]["acc_top1"])
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_piped_output_has_a_line_per_epoch_the_full_table_and_where_to_look(two_runs) -> None:
    """Issue 17, finding 8: with stdout not a terminal nothing was printed per epoch, train.log
    held two lines, and the final table wrapped at 80 columns."""
    first = two_runs[0]
    stdout = (first.parent / "first.stdout").read_text()
    for text in (stdout, (first / "train.log").read_text()):
        epochs = [line for line in text.splitlines() if "epoch " in line and "train/loss" in line]
        teacher = [line for line in epochs if "teacher cnn_small epoch" in line]
        lines = [line for line in epochs if line not in teacher]
        assert len(lines) == 2, text[-3000:]  # trainer.max_epochs=2
        assert "epoch 2/2" in lines[1] and "val/acc" in lines[1] and "ETA 0:00:00" in lines[1]
        assert len(teacher) == 1 and "teacher cnn_small epoch 1/1" in teacher[0]  # the teacher trained here, 1 epoch
    caption = next(line for line in stdout.splitlines() if "MACs: torch.utils.flop_counter" in line)
    assert "MB = 10^6 bytes of state_dict." in caption  # printed whole on one line, not wrapped at 80
    assert "Teacher: trained now, cached as" in stdout
    table = (first / "results.md").read_text()
    assert "| top-1 accuracy |" in table and "teacher / student" in table
    assert f"Run folder: {first}" in stdout and f"tensorboard --logdir {first}" in stdout


def test_piped_output_has_no_progress_frames_one_seed_line_and_the_config_first(two_runs) -> None:
    """Round 3, 25.9: piped output ended each loop with the progress bar's last frame (0-based
    epochs), the teacher's training printed a model summary labelled "student", "Seed set to 0"
    came twice; the run's config was shown nowhere."""
    first, second, _ = two_runs
    for run in (first, second):
        stdout = (run.parent / f"{run.name}.stdout").read_text()
        lines = stdout.splitlines()
        assert not [line for line in lines if line.startswith(("Epoch ", "Testing", "Validation")) or "it/s" in line]
        assert "Trainable params" not in stdout and "┃ Name" not in stdout  # no model summary
        for text in (stdout, (run / "train.log").read_text()):  # the config, as a tree, comes first
            top = text.splitlines()[:200]
            assert top[0] == "config" and "├── method" in top and "│   └── name: kd" in top, "\n".join(top[:40])
    second_out = (second.parent / "second.stdout").read_text()
    assert second_out.count("Seed set to 0") == 1  # a cached teacher: the run's seed, once
