"""After training: the Python API, model cards, load_student, load_from_checkpoint, kdexp-eval and
kdexp-export, on one tiny fake-data run (trained once for the module)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kdexp
from conftest import REPO, console_script

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY = [
    "data=fake",
    "data.image_shape=[1,28,28]",
    "data.train_size=64",
    "data.test_size=48",
    "teacher=cnn_small",
    "student=cnn_tiny",
    "trainer.max_epochs=2",
    "teacher.train.max_epochs=1",
    "profile.min_run_time=0.02",
    "profile.throughput_batch=8",
    "profile.runtimes=[torch,onnxruntime]",
    "logger=none",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    """One kd run through ``kdexp.run`` (the notebook API): its folder and returned results."""
    tmp = tmp_path_factory.mktemp("deploy")
    results = kdexp.run([*TINY, f"paths.cache_dir={tmp / 'cache'}"], output_dir=tmp / "run")
    return tmp / "run", results


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_python_api_returns_the_results_json(run) -> None:
    run_dir, results = run
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["complete"] and on_disk["student"]["acc_top1"] == results["student"]["acc_top1"]
    assert results["run"]["output_dir"] == str(run_dir.resolve())
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    # profile.runtimes=[torch,onnxruntime]: both timings, and the deployed speed-up from them
    for role in ("teacher", "student"):
        assert results[role]["latency_ms_b1_onnxruntime"] > 0 and results[role]["throughput_ips_onnxruntime"] > 0
        assert results[role]["threads_onnxruntime"] == results[role]["threads"]
    assert results["comparison"]["speedup_latency_b1_onnxruntime"] == pytest.approx(
        results["teacher"]["latency_ms_b1_onnxruntime"] / results["student"]["latency_ms_b1_onnxruntime"]
    )


def test_import_kdexp_is_light() -> None:
    code = "import sys, kdexp; print(sorted(m for m in ('torch', 'hydra', 'pytorch_lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


def test_model_card_and_load_student_rebuild_the_exact_model(run) -> None:
    run_dir, _ = run
    card = json.loads((run_dir / "student.json").read_text())
    assert card["name"] == "cnn_tiny" and card["source"] == "kdexp" and card["num_classes"] == 10
    assert card["input_shape"] == [1, 28, 28] and card["weights"] == "student.pt" and card["quantization"] is None
    model = kdexp.load_student(run_dir)
    saved = torch.load(run_dir / "student.pt", weights_only=True)
    assert set(model.state_dict()) == set(saved)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert not model.training
    teacher_card = json.loads((run_dir / "teacher.json").read_text())
    assert Path(teacher_card["weights"]).is_file() and teacher_card["name"] == "cnn_small"


def test_load_from_checkpoint_needs_no_extra_arguments(run) -> None:
    from kdexp.methods import DistillationModule, KDModule

    run_dir, _ = run
    path = run_dir / "checkpoints" / "last.ckpt"
    module = KDModule.load_from_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
    assert module.temperature == 4 and module.kd_weight == pytest.approx(0.9)
    # the teacher is rebuilt from its recorded cache entry, frozen
    teacher_state = kdexp.load_student(run_dir, role="teacher").state_dict()
    assert all(torch.equal(module.teacher.state_dict()[k], v) for k, v in teacher_state.items())
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert type(DistillationModule.load_from_checkpoint(path)) is KDModule
    # the student of a checkpoint, straight away
    student = kdexp.load_student(path)
    assert all(torch.equal(student.state_dict()[k], state[f"student.{k}"]) for k in student.state_dict())


def test_kdexp_eval_reproduces_the_run_test_accuracy(run, capfd) -> None:
    from kdexp.evaluation import main

    run_dir, results = run
    before = set((run_dir / "evaluations").glob("*.json")) if (run_dir / "evaluations").exists() else set()
    proc = console_script(main, f"run={run_dir}", "profile.enabled=false", capfd=capfd)
    assert proc.exit_code == 0, proc.err[-3000:]
    assert "top-1 agreement" in proc.out
    (record,) = set((run_dir / "evaluations").glob("*.json")) - before
    evaluated = json.loads(record.read_text())
    # same test split, same weights: the same numbers as the run itself measured
    assert evaluated["student"]["acc_top1"] == pytest.approx(results["student"]["acc_top1"])
    assert evaluated["teacher"]["acc_top1"] == pytest.approx(results["teacher"]["acc_top1"])
    assert evaluated["comparison"]["agreement_top1"] == pytest.approx(results["comparison"]["agreement_top1"])
    assert evaluated["run"]["test_images"] == 48


def test_evaluate_python_on_another_split_of_the_same_classes(run) -> None:
    run_dir, _ = run
    out = kdexp.evaluate(run_dir, ["data.test_size=16"], teacher="none")
    assert out["run"]["test_images"] == 16 and out["teacher"] == {} and 0 <= out["student"]["acc_top1"] <= 1
    again = kdexp.evaluate(run_dir, ["data.test_size=16"], teacher="none")  # still the function
    assert again["student"]["acc_top1"] == out["student"]["acc_top1"]


def test_kdexp_eval_refuses_data_with_other_classes(run, capsys) -> None:
    from kdexp.evaluation import main

    run_dir, _ = run
    before = digests(run_dir)
    assert main([f"run={run_dir}", "data.num_classes=7"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "has 7 classes but the student (cnn_tiny) predicts 10" in message
    assert digests(run_dir) == before


def test_export_onnx_matches_pytorch_in_onnx_runtime(run, capfd) -> None:
    import onnxruntime as ort

    from kdexp.exporting import main

    run_dir, _ = run
    proc = console_script(main, str(run_dir), "format=onnx", capfd=capfd)
    assert proc.exit_code == 0, proc.err[-3000:]
    record = json.loads((run_dir / "exports.json").read_text())["student.onnx"]
    path = run_dir / record["file"]
    assert path.is_file() and record["size_bytes"] == path.stat().st_size
    assert record["check"]["passed"] and record["check"]["images"] == 48
    assert record["check"]["max_abs_diff"] <= record["check"]["atol"]
    # independently: ONNX Runtime on a batch size never seen at export time vs the eager model
    model = kdexp.load_student(run_dir)
    x = torch.randn(5, 1, 28, 28)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, model(x).numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors"])
def test_export_other_formats(run, fmt: str) -> None:
    run_dir, _ = run
    record = kdexp.export(run_dir, format=fmt, images=16)
    assert (run_dir / record["file"]).is_file() and record["check"]["passed"]
    if fmt == "safetensors":
        assert record["check"]["max_abs_diff"] == 0.0


def test_export_bad_input_is_clear_and_writes_nothing(run, tmp_path, capsys) -> None:
    from kdexp.saved.export import export_run

    run_dir, _ = run
    before = digests(run_dir)
    with pytest.raises(ValueError, match=r"opset=9 is not one torch.onnx can export; choose 18 to \d+"):
        export_run(run_dir, "onnx", opset=9)
    with pytest.raises(ValueError, match="format='tflite' is not supported; choose one of: onnx, torchscript, safetensors"):
        export_run(run_dir, "tflite")
    assert digests(run_dir) == before
    # a run that did not finish: checkpoints, no results.json
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir / "checkpoints", unfinished / "checkpoints")
    with pytest.raises(ValueError, match="did not finish"):
        export_run(unfinished, "onnx")
    # a finished run folder without a student
    no_student = tmp_path / "no_student"
    no_student.mkdir()
    shutil.copy(run_dir / "results.json", no_student / "results.json")
    with pytest.raises(FileNotFoundError, match="has no student to load"):
        export_run(no_student, "onnx")
    assert sorted(p.name for p in no_student.iterdir()) == ["results.json"]
    from kdexp.exporting import main

    assert main([str(unfinished), "format=onnx"]) == 2
    assert "did not finish" in capsys.readouterr().err


def test_run_table_and_sweep_report_show_onnx_runtime_beside_eager(run) -> None:
    from rich.console import Console

    from kdexp.report import find_runs, rows_markdown, summarise
    from kdexp.results import print_results

    run_dir, results = run
    console = Console(record=True, width=200)
    print_results(results, console)
    table = console.export_text()
    assert "latency b=1 (ms, median)" in table and "ONNX Runtime latency b=1 (ms)" in table
    (row,) = summarise(find_runs([run_dir]))
    assert row["student_latency_ms_onnxruntime"] == pytest.approx(results["student"]["latency_ms_b1_onnxruntime"])
    markdown = rows_markdown([row])
    assert "student latency b=1 (ms)" in markdown and "ONNX Runtime speed-up" in markdown


def test_unknown_runtime_is_refused_before_any_training(tmp_path) -> None:
    from kdexp.errors import SetupError

    with pytest.raises(SetupError, match=r"profile.runtimes=\['torch', 'tensorrt'\] has unknown runtime\(s\) \['tensorrt'\]; allowed: \['torch', 'onnxruntime'\]"):
        kdexp.run([*TINY[:6], "profile.runtimes=[torch,tensorrt]", f"paths.cache_dir={tmp_path / 'cache'}"], output_dir=tmp_path / "run")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_archive_finished_keeps_the_model_cards_with_their_weights(tmp_path):
    """A rerun into a finished run's folder stamps its cards together with the weights and
    results.json; other records (exports.json) and already-stamped files stay as they are."""
    import json

    from kdexp.runner.folder import archive_finished

    (tmp_path / "results.json").write_text(json.dumps({"run": {"status": "complete"}}))
    for name in ("student.pt", "student.json", "student1.pt", "student1.json", "teacher.json",
                 "exports.json", "student.20260101-000000.json"):
        (tmp_path / name).write_text(name)
    archive_finished(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert {"exports.json", "student.20260101-000000.json"} <= set(left)
    for stem in ("results", "student", "student1", "teacher"):
        assert not (tmp_path / f"{stem}.json").exists()
        assert sum(1 for n in left if n.startswith(f"{stem}.") and n.endswith(".json")) == (2 if stem == "student" else 1)
    assert not (tmp_path / "student.pt").exists() and not (tmp_path / "student1.pt").exists()


def test_kdexp_run_is_the_api_function_even_after_the_run_layer_is_imported(tmp_path):
    """``kdexp.run`` is only ever kdexp.api.run: the run layer is the package kdexp.runner."""
    import json
    import types

    import kdexp.api
    import kdexp.runner.entry  # noqa: F401  (sets kdexp.runner, never kdexp.run)

    assert kdexp.run is kdexp.api.run and not isinstance(kdexp.run, types.ModuleType)
    from kdexp.errors import SetupError

    with pytest.raises(SetupError, match="optimized_metric"):
        kdexp.run(["data=fake", "optimized_metric=nodot"], output_dir=tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["run"]["status"] != "complete"  # recorded
