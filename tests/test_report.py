"""kdexp-report: grouping over seeds, the vanilla baseline, failed runs, the files it writes."""

import csv
import json
from pathlib import Path

import pytest

from kdexp.report import find_runs, main, summarise
from kdexp.sweep import job_dirname, relaunches


def fake_run(
    folder: Path, method: str, seed: int, acc: float, temperature: float = 4, best: float | None = None,
    overrides: tuple[str, ...] = (),
) -> None:
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(f"method:\n  name: {method}\n  temperature: {temperature}\n")
    (folder / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in (f"method={method}", f"seed={seed}", *overrides))
    )
    student = {"acc_top1": acc, "params": 6274, "macs": 4.0e5, "latency_ms_b1": 0.1}
    if best is not None:
        student["acc_top1_best_epoch"] = best
    results = {
        "run": {"method": method, "data": "fashion_mnist", "teacher": "cnn_large", "student": "cnn_tiny",
                "seed": seed, "complete": True},
        "student": student,
        "teacher": {"acc_top1": 0.93, "params": 288170, "latency_ms_b1": 0.5},
        "comparison": {"speedup_latency_b1": 5.0},
    }
    (folder / "results.json").write_text(json.dumps(results))


def test_groups_by_everything_but_the_seed(tmp_path: Path) -> None:
    for seed, acc in enumerate((0.90, 0.91, 0.92)):
        fake_run(tmp_path / f"kd{seed}", "kd", seed, acc, best=acc + 0.01)
    fake_run(tmp_path / "kd_t2", "kd", 0, 0.5, temperature=2)
    rows = summarise(find_runs([tmp_path]))
    assert len(rows) == 2
    t4 = next(r for r in rows if "temperature=4" in r["options"])
    assert t4["n"] == 3 and t4["seeds"] == [0, 1, 2] and t4["failed"] == 0
    assert t4["student_acc_last_mean"] == pytest.approx(0.91)
    assert t4["student_acc_last_std"] == pytest.approx(0.01)
    assert t4["student_acc_best_mean"] == pytest.approx(0.92)
    assert t4["speedup"] == pytest.approx(5.0) and t4["student_params"] == 6274


def test_delta_against_the_vanilla_student_of_the_same_setting(tmp_path: Path) -> None:
    for seed, acc in enumerate((0.88, 0.90)):
        fake_run(tmp_path / f"v{seed}", "vanilla", seed, acc)
        fake_run(tmp_path / f"kd{seed}", "kd", seed, acc + 0.02)
    fake_run(tmp_path / "kd_long", "kd", 0, 0.95, overrides=("trainer.max_epochs=50",))
    rows = {(r["method"], r["setting"]): r for r in summarise(find_runs([tmp_path]))}
    assert rows[("kd", "")]["delta_vs_vanilla"] == pytest.approx(0.02)
    assert rows[("vanilla", "")]["delta_vs_vanilla"] is None
    assert rows[("kd", "trainer.max_epochs=50")]["delta_vs_vanilla"] is None  # no vanilla at 50 epochs


def test_failed_runs_are_counted_and_listed_and_generations_skipped(tmp_path: Path) -> None:
    fake_run(tmp_path / "ok", "kd", 0, 0.9)
    bad = tmp_path / "bad"
    fake_run(bad, "kd", 1, 0.0)  # then overwritten by the record of a failure
    (bad / "results.json").write_text(json.dumps(
        {"run": {"method": "kd", "data": "fashion_mnist", "teacher": "cnn_large", "student": "cnn_tiny",
                 "seed": 1, "status": "failed", "error": "ValueError: boom"}}
    ))
    fake_run(tmp_path / "ok" / "gen1", "born_again", 0, 0.1)  # a chain's generation: not a run
    gen = json.loads((tmp_path / "ok" / "gen1" / "results.json").read_text())
    gen["run"]["generation"] = 1
    gen["run"]["chain_step"] = "generation"
    (tmp_path / "ok" / "gen1" / "results.json").write_text(json.dumps(gen))
    (row,) = summarise(find_runs([tmp_path]))
    assert (row["n"], row["failed"]) == (1, 1)
    assert "boom" in row["errors"][0]


def test_cli_writes_markdown_csv_and_plots_and_fails_on_empty(tmp_path: Path) -> None:
    fake_run(tmp_path / "a", "vanilla", 0, 0.88)
    fake_run(tmp_path / "b", "kd", 0, 0.90)
    out = tmp_path / "report"
    assert main([str(tmp_path), "--out", str(out)]) == 0
    assert "| cnn_large → cnn_tiny | kd |" in (out / "report.md").read_text()
    assert {r["method"] for r in csv.DictReader((out / "report.csv").open())} == {"vanilla", "kd"}
    for plot in ("acc_vs_latency.png", "acc_vs_size.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG"
    assert main([str(tmp_path / "a" / ".hydra")]) == 1


def test_runs_that_differ_in_data_teacher_or_student_settings_are_not_merged(tmp_path: Path) -> None:
    """Issue 17, finding 4: two sweeps at batch size 64 and 128 came out as one row with n = 2."""
    for batch in (64, 128):
        for seed in (0, 1):
            folder = tmp_path / f"b{batch}" / f"s{seed}"
            fake_run(folder, "kd", seed, 0.9, overrides=(f"data.batch_size={batch}",))
            config = folder / ".hydra" / "config.yaml"
            config.write_text(config.read_text() + f"data:\n  name: fashion_mnist\n  batch_size: {batch}\n"
                              f"seed: {seed}\npaths:\n  output_dir: {folder}\n")
    fake_run(tmp_path / "t" / "s0", "kd", 0, 0.9, overrides=("teacher.train.max_epochs=8", "data.batch_size=64"))
    rows = summarise(find_runs([tmp_path]))
    by_setting = {r["setting"]: r for r in rows}
    assert set(by_setting) == {"data.batch_size=64", "data.batch_size=128",
                               "data.batch_size=64 teacher.train.max_epochs=8"}
    assert by_setting["data.batch_size=64"]["n"] == 2 and by_setting["data.batch_size=128"]["n"] == 2
    assert "data.batch_size=128" in by_setting["data.batch_size=128"]["options"]


def test_rows_price_the_comparison_and_flag_noisy_timings(tmp_path: Path) -> None:
    """Issue 17, finding 5: single noisy timings were trusted, and training cost was not shown.
    The train time is the student's training alone (run.phases_s.training): the job that trained
    the teacher took 100 s in all, 70 s of them the teacher's, said once in the caption."""
    runs = (("trained", 100.0, 70.0, 28.0, 0.5), ("cache", 60.0, 0.1, 30.0, 0.5), ("cache", 62.0, 0.1, 32.0, 0.6))
    for seed, (source, duration, teacher_s, training_s, iqr) in enumerate(runs):
        folder = tmp_path / f"kd{seed}"
        fake_run(folder, "kd", seed, 0.9)
        results = json.loads((folder / "results.json").read_text())
        results["run"].update(duration_s=duration, teacher_source={"source": source, "key": "95a9b0", "summary": f"{source} 95a9…"},
                              phases_s={"teacher": teacher_s, "training": training_s, "evaluation": 1.0})
        results["student"]["latency_iqr_ms_b1"] = iqr
        results["student"]["latency_noisy"] = True
        (folder / "results.json").write_text(json.dumps(results))
    (row,) = summarise(find_runs([tmp_path]))
    assert row["teacher_cache_hits"] == "2/3"
    assert row["train_time_s"] == pytest.approx(30.0) and row["run_time_s"] == pytest.approx(74.0)
    assert row["teacher_train_time_s"] == pytest.approx(70.0)
    assert row["latency_noisy"] is True
    assert main([str(tmp_path)]) == 0
    table = (tmp_path / "report.md").read_text()
    assert "| 0.1 ⚠ | 5.0× ⚠ | 30 | 2/3 |" in table
    assert "Teacher cnn_large: cache 95a9…; trained once, in 70 s (not in any row's train s)." in table
    assert (tmp_path / "acc_vs_train_time.png").read_bytes()[:4] == b"\x89PNG"


def test_a_student_that_declares_its_stored_form_gets_those_columns(tmp_path: Path) -> None:
    """Issue 13: a quantised student's size at its bit-width and its int8 model's numbers are
    columns of the report (shown only when some row has them), beside the float32 size."""
    from kdexp.report import rows_markdown

    fake_run(tmp_path / "fp", "vanilla", 0, 0.86)
    fake_run(tmp_path / "w8", "vanilla", 0, 0.79, overrides=("+student.quantize.weight_bits=8",))
    quantised = json.loads((tmp_path / "w8" / "results.json").read_text())
    quantised["student"].update(size_mb=0.0597, size_mb_float32=0.0251, deployed_size_mb=0.0069, int8_acc_top1=0.7895, int8_latency_ms_b1=3.5)
    (tmp_path / "w8" / "results.json").write_text(json.dumps(quantised))
    rows = summarise(find_runs([tmp_path]))
    text = rows_markdown(rows)
    assert "student size as deployed (MB; as float32 in brackets)" in text and "int8 model top-1 (%)" in text
    w8 = next(line for line in text.splitlines() if "weight_bits=8" in line)
    assert "0.0069 (0.0251)" in w8 and "| 78.95 |" in w8 and "| 3.5" in w8
    only_fp = rows_markdown([r for r in rows if "weight_bits" not in r["options"]])
    assert "deployed" not in only_fp and "int8" not in only_fp
