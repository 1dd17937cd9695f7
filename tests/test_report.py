"""kdexp-report: grouping over seeds, the vanilla baseline, failed runs, the files it writes."""

import csv
import json
from pathlib import Path

import pytest

from kdexp.report import find_runs, main, summarise
from kdexp.tools.config import job_dirname
from kdexp.sweep import relaunches


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


def _edit(folder: Path, **sections: dict) -> None:
    """Update sections of a fake run's results.json."""
    results = json.loads((folder / "results.json").read_text())
    for name, fields in sections.items():
        results.setdefault(name, {}).update(fields)
    (folder / "results.json").write_text(json.dumps(results))


def test_one_architecture_has_one_latency_and_speedup_the_stores_at_report_time(tmp_path: Path) -> None:
    """The issue's report: cnn_tiny read 0.302 ms ⚠ in the vanilla and kd rows and 0.245 ms in the
    at row (the store had been updated by the later job), so one pair showed 4.8× and 5.9×."""
    store = tmp_path / "cache" / "timings.json"
    store.parent.mkdir()
    store.write_text(json.dumps({"s1": {"latency_ms_b1": 0.245, "latency_iqr_ms_b1": 0.01, "throughput_ips": 9000.0},
                                 "t1": {"latency_ms_b1": 1.45, "latency_iqr_ms_b1": 0.02, "throughput_ips": 1500.0}}))
    own = {"vanilla": (0.302, 0.2), "kd": (0.302, 0.2), "at": (0.245, 0.01)}  # each run's own copy
    for method, (latency, iqr) in own.items():
        folder = tmp_path / "sweep" / method
        fake_run(folder, method, 0, 0.9)
        _edit(folder, student={"latency_ms_b1": latency, "latency_iqr_ms_b1": iqr, "latency_noisy": iqr > 0.1,
                               "timing_key": "s1", "timing_store": str(store)},
              teacher={"latency_ms_b1": 1.45, "latency_iqr_ms_b1": 0.02, "timing_key": "t1", "timing_store": str(store)},
              comparison={"speedup_latency_b1": 1.45 / latency})
    rows = summarise(find_runs([tmp_path / "sweep"]))
    assert {r["student_latency_ms"] for r in rows} == {0.245}
    assert {round(r["speedup"], 3) for r in rows if r["method"] != "vanilla"} == {round(1.45 / 0.245, 3)}
    assert not any(r["latency_noisy"] for r in rows)
    # The store's noise marker is the one shown.
    store.write_text(json.dumps({"s1": {"latency_ms_b1": 0.25, "latency_iqr_ms_b1": 0.2, "throughput_ips": 9000.0}}))
    rows = summarise(find_runs([tmp_path / "sweep"]))
    assert {r["student_latency_ms"] for r in rows} == {0.25} and all(r["latency_noisy"] for r in rows)
    # Another machine (no store there): the steadiest of the runs' copies, still one for all rows.
    store.unlink()
    rows = summarise(find_runs([tmp_path / "sweep"]))
    assert {r["student_latency_ms"] for r in rows} == {0.245} and not any(r["latency_noisy"] for r in rows)
    assert len({r["speedup"] for r in rows if r["method"] != "vanilla"}) == 1


def test_runs_without_a_timing_key_share_the_steadiest_copy_of_their_architecture(tmp_path: Path) -> None:
    for seed, (latency, iqr) in enumerate(((0.30, 0.2), (0.24, 0.01))):
        fake_run(tmp_path / f"kd{seed}", "kd", seed, 0.9)
        _edit(tmp_path / f"kd{seed}", student={"latency_ms_b1": latency, "latency_iqr_ms_b1": iqr})
    fake_run(tmp_path / "other", "kd", 0, 0.9, temperature=2)  # another architecture (params) keeps its own
    _edit(tmp_path / "other", student={"latency_ms_b1": 0.5, "latency_iqr_ms_b1": 0.01, "params": 9999})
    runs = find_runs([tmp_path])
    assert sorted(r["student"]["latency_ms_b1"] for r in runs) == [0.24, 0.24, 0.5]


def test_runs_timed_with_different_thread_counts_share_the_steadier_timing(tmp_path: Path) -> None:
    """runtime.threads=auto on a busy machine gave one run 1 thread and the next 2: two store
    entries for one model on one device. The report shows one of them, the steadier."""
    store = tmp_path / "timings.json"
    store.write_text(json.dumps({"k1": {"latency_ms_b1": 0.34, "latency_iqr_ms_b1": 0.09, "throughput_ips": 6000.0},
                                 "k2": {"latency_ms_b1": 0.60, "latency_iqr_ms_b1": 4.9, "throughput_ips": 4500.0}}))
    for seed, (key, threads) in enumerate((("k1", 1), ("k2", 2))):
        fake_run(tmp_path / f"kd{seed}", "kd", seed, 0.9)
        _edit(tmp_path / f"kd{seed}", student={"timing_key": key, "timing_store": str(store), "threads": threads,
                                                "device": "cpu", "latency_ms_b1": 0.5, "latency_iqr_ms_b1": 0.1})
    students = [r["student"] for r in find_runs([tmp_path])]
    assert {(s["latency_ms_b1"], s["threads"], s["timing_source"]) for s in students} == {(0.34, 1, "store")}


def _shortened_sweep(root: Path) -> None:
    """vanilla and kd, 2 seeds, all cut to 2 epochs of 40 batches with a 1-epoch teacher."""
    constant = ("trainer.limit_train_batches=40", "trainer.max_epochs=2", "teacher.train.max_epochs=1")
    for method in ("vanilla", "kd"):
        for seed in (0, 1):
            folder = root / f"{method}{seed}"
            fake_run(folder, method, seed, 0.54 if method == "kd" else 0.65, overrides=constant)
            config = folder / ".hydra" / "config.yaml"
            config.write_text(config.read_text() + "trainer:\n  max_epochs: 2\n  limit_train_batches: 40\n"
                              "  limit_val_batches: null\n  max_steps: -1\nteacher:\n  train:\n    max_epochs: 1\n")
            source = {"source": "trained" if seed == 0 else "cache", "key": "95a9b0",
                      "summary": "cache 95a9…, trained 1 epoch, test 70.00%"} if method == "kd" else None
            _edit(folder, run={"teacher_source": source, "phases_s": {"teacher": 12.0, "training": 5.0}})


def test_the_settings_every_row_shares_are_in_the_caption_the_sidecar_and_the_plot_titles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue: a sweep cut to 2 epochs of 40 batches with a shortened teacher presented 54% and
    65% as "the" KD and vanilla numbers; only shared method options were in the caption."""
    import yaml

    from kdexp import report

    _shortened_sweep(tmp_path)
    titles: list[str] = []
    original = report.figure_title
    monkeypatch.setattr(report, "figure_title", lambda *a, **k: titles.append(original(*a, **k)) or titles[-1])
    assert main([str(tmp_path)]) == 0
    said = "All rows: trainer.max_epochs=2 trainer.limit_train_batches=40 teacher.train.max_epochs=1 temperature=4."
    teacher = "Teacher cnn_large: cache 95a9…, trained 1 epoch, test 70.00%; trained once, in 12 s"
    text = (tmp_path / "report.md").read_text()
    assert said in text and teacher in text
    settings = yaml.safe_load((tmp_path / "report_settings.yaml").read_text())
    assert settings["notes"][0] == said and settings["notes"][1].startswith(teacher)
    assert settings["shared_settings"]["trainer.limit_train_batches"] == "40"
    assert settings["shared_overrides"] == ["trainer.limit_train_batches=40", "trainer.max_epochs=2",
                                            "teacher.train.max_epochs=1"]
    assert len(titles) >= 3 and all("trainer.limit_train_batches=40" in t and "Teacher cnn_large" in t for t in titles)
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "report.csv").open())}
    assert rows["kd"]["teacher_train_time_s"] == "12.0" and rows["vanilla"]["teacher_train_time_s"] == ""


def test_a_single_seed_row_shows_no_spread(tmp_path: Path) -> None:
    fake_run(tmp_path / "kd", "kd", 0, 0.9, best=0.91)
    for seed in (0, 1):
        fake_run(tmp_path / f"v{seed}", "vanilla", seed, 0.88 + seed / 100)
    assert main([str(tmp_path)]) == 0
    lines = (tmp_path / "report.md").read_text().splitlines()
    kd = next(line for line in lines if "| kd |" in line)
    vanilla = next(line for line in lines if "| vanilla |" in line)
    assert "| 91.00 ± — | 90.00 ± — |" in kd and "± 0.00" not in kd
    assert "88.50 ± 0.71" in vanilla
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "report.csv").open())}
    assert rows["kd"]["student_acc_last_std"] == ""


def _write_curve(folder: Path, accs: list[float]) -> None:
    """A CSV logger's metrics.csv as Lightning writes it: val/acc rows with their 0-based epoch."""
    (folder / "csv").mkdir()
    lines = ["epoch,step,train/loss_epoch,val/acc"]
    for epoch, acc in enumerate(accs):
        lines += [f"{epoch},{8 * epoch + 7},,{acc}", f"{epoch},{8 * epoch + 7},0.5,"]
    (folder / "csv" / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_learning_curves_over_seeds_for_a_2_method_2_seed_sweep(tmp_path: Path) -> None:
    """Validation accuracy per epoch per method, mean ± std over seeds, as a PNG in the report and
    as TensorBoard scalars (step = epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kdexp.report import learning_curves

    accs = {("vanilla", 0): [0.5, 0.6, 0.7], ("vanilla", 1): [0.6, 0.7, 0.8],
            ("kd", 0): [0.55, 0.7, 0.75], ("kd", 1): [0.65, 0.7, 0.85]}
    for (method, seed), curve in accs.items():
        fake_run(tmp_path / f"{method}{seed}", method, seed, curve[-1])
        _write_curve(tmp_path / f"{method}{seed}", curve)
    curves = {key[3]: points for key, points in learning_curves(find_runs([tmp_path])).items()}
    assert [(e, round(m, 4), round(s, 4), n) for e, m, s, n in curves["kd"]] == [
        (1, 0.6, 0.0707, 2), (2, 0.7, 0.0, 2), (3, 0.8, 0.0707, 2)]
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "](learning_curves.png)" in (tmp_path / "report.md").read_text()
    log = EventAccumulator(str(tmp_path / "learning_curves" / "kd"))
    log.Reload()
    (mean,) = [t for t in log.Tags()["scalars"] if t.endswith("/val_acc_mean")]
    assert [(e.step, round(e.value, 4)) for e in log.Scalars(mean)] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    images = EventAccumulator(str(tmp_path / "learning_curves"))
    images.Reload()
    assert images.Tags()["images"] == ["learning_curves"]
    assert main([str(tmp_path)]) == 0  # a second report replaces the curves' event files
    assert len(list((tmp_path / "learning_curves" / "kd").glob("events.out.tfevents.*"))) == 1


def test_a_real_2_method_2_seed_sweep_has_learning_curves_and_one_latency_per_model(tmp_path: Path) -> None:
    """The one real sweep here (in-process, 2 epochs of 4 batches): curves read back from the runs'
    TensorBoard files, the timings from the store the runs share, the shortened settings said."""
    import kdexp
    from kdexp.report import learning_curves, write_report

    tiny = ("data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32", "data.batch_size=16",
            "teacher=cnn_tiny", "student=cnn_tiny", "trainer.max_epochs=2", "teacher.train.max_epochs=1",
            "profile.min_run_time=0.02", "profile.throughput_batch=4", f"paths.cache_dir={tmp_path / 'cache'}")
    for method in ("vanilla", "kd"):
        for seed in (0, 1):
            kdexp.run([*tiny, f"method={method}", f"seed={seed}"], output_dir=tmp_path / "sweep" / f"{method}{seed}")
    runs = find_runs([tmp_path / "sweep"])
    curves = {key[3]: points for key, points in learning_curves(runs).items()}
    for method in ("vanilla", "kd"):
        last_val = [r["student"]["val_acc_top1"] for r in runs if r["run"]["method"] == method]
        assert [(epoch, n) for epoch, _, _, n in curves[method]] == [(1, 2), (2, 2)]
        assert curves[method][-1][1] == pytest.approx(sum(last_val) / 2)
    students = [r["student"] for r in runs]
    assert {s["timing_source"] for s in students} == {"store"} and len({s["latency_ms_b1"] for s in students}) == 1
    write_report([tmp_path / "sweep"])
    assert (tmp_path / "sweep" / "learning_curves.png").is_file()
    text = (tmp_path / "sweep" / "report.md").read_text()
    assert "All rows: trainer.max_epochs=2 " in text and "teacher.train.max_epochs=1" in text
