"""Every saved student loads, evaluates and exports (or is refused up front with the reason):
load_from_checkpoint of every method, quantised students, jointly trained teachers, edited
model cards, images of another size, sweep folders as kdexp-export's run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import kdexp
from conftest import make_method
from kdexp.methods import METHODS, DistillationModule
from kdexp.models import BuiltModel, build_model

TINY = (
    "data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32",
    "trainer.max_epochs=1", "teacher.train.max_epochs=1", "logger=none", "profile.enabled=false",
)


def tiny_run(tmp: Path, name: str, *overrides: str) -> tuple[Path, dict]:
    out = tmp / name
    results = kdexp.run([*TINY, f"paths.cache_dir={tmp / 'cache'}", *overrides], output_dir=out)
    return out, results


# --- load_from_checkpoint, every method ------------------------------------------------------------
def method_module(name: str, tmp: Path):
    """A tiny module of method ``name`` whose teacher's weights are on disk, as a run records them."""
    from kdexp.teacher.provide import record_teacher_weights
    from kdexp.incremental.head import grown
    from kdexp.methods import build_method
    from kdexp.models.route import AnchorRoute

    torch.manual_seed(0)
    if name == "rco":  # a route of two anchors, each its own file
        arch = build_model({"name": "cnn_small"}, 10, 1)
        anchors, files = [], []
        for k in range(2):
            anchor = build_model({"name": "cnn_small"}, 10, 1).module
            files.append(tmp / f"anchor{k}.pt")
            torch.save(anchor.state_dict(), files[-1])
            anchors.append(anchor)
        route = BuiltModel(AnchorRoute(anchors, ["epoch 1", "epoch 2"], [1, 2]), arch.name, arch.stages, arch.classifier, arch.cfg)
        module = make_method("rco", teacher=route)
        record_teacher_weights(module, {"path": str(files[-1]), "route": [str(f) for f in files]})
        return module
    if name in ("lwf", "icarl", "finetune", "joint"):  # a second step: the teacher knows 4 classes, the student 6
        old = build_model({"name": "cnn_tiny"}, 4, 1)
        torch.save(old.module.state_dict(), tmp / "step1.pt")
        module = build_method({"name": name}, grown(old, 6), old, 6, (1, 28, 28), {"name": "sgd", "lr": 0.1}, {"name": "none"})
        record_teacher_weights(module, {"path": str(tmp / "step1.pt"), "num_classes": 4})
        return module
    module = make_method(name, student="cnn_small" if name == "fsp" else "cnn_tiny")
    if name == "crd":
        module._build_memory(64)  # as setup() sizes it from the training set
        module.contrast.memory_student.normal_()
    if module.teacher is not None and not type(module).teacher_use.trained_with_student:
        torch.save(module.teacher.state_dict(), tmp / "teacher.pt")
        record_teacher_weights(module, {"path": str(tmp / "teacher.pt")})
    return module


def save_checkpoint(module, path: Path) -> None:
    """What Lightning's checkpoint holds of a module: its weights, hyperparameters and own additions."""
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": pl.__version__}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


@pytest.mark.parametrize("name", METHODS.names())
def test_load_from_checkpoint_needs_no_other_argument(name: str, tmp_path: Path) -> None:
    module = method_module(name, tmp_path)
    path = tmp_path / "last.ckpt"
    save_checkpoint(module, path)
    loaded = DistillationModule.load_from_checkpoint(path)
    assert type(loaded) is type(module)
    state, saved = loaded.state_dict(), module.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    if module.teacher is not None:  # rebuilt from its recorded file(s), or from the checkpoint itself
        teacher = dict(loaded.teacher.state_dict())
        assert all(torch.equal(teacher[k], v) for k, v in module.teacher.state_dict().items())
    from kdexp.methods.checkpoint import model_infos

    role = next(r for r in model_infos(module) if r.startswith("student"))  # a DML cohort: student0
    student = kdexp.load_student(path, role)  # the student of the checkpoint, straight away
    expected = model_infos(module)[role].module.state_dict()
    assert all(torch.equal(student.state_dict()[k], v) for k, v in expected.items())


# --- a quantised student --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quantised(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("quantised")
    return tiny_run(tmp, "run", "teacher=cnn_tiny", "student=cnn_tiny", "+student.quantize.weight_bits=4", "+student.quantize.activation_bits=8")


def test_quantised_student_card_names_its_quantisation(quantised) -> None:
    run_dir, results = quantised
    card = json.loads((run_dir / "student.json").read_text())
    q = card["quantization"]
    assert card["name"] == "cnn_tiny-w4a8" and (q["weight_bits"], q["activation_bits"]) == (4, 8)
    assert "fake quantisation" in q["scheme"] and q["deployed_size_mb"] == pytest.approx(results["student"]["deployed_size_mb"])
    assert json.loads((run_dir / "teacher.json").read_text())["quantization"] is None


def test_quantised_student_loads_evaluates_and_exports(quantised) -> None:
    from kdexp.saved.export import export_run

    run_dir, results = quantised
    model = kdexp.load_student(run_dir)
    saved = torch.load(run_dir / "student.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    from_ckpt = kdexp.load_student(run_dir / "checkpoints" / "last.ckpt")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), from_ckpt(x))
    out = kdexp.evaluate(run_dir, ["profile.enabled=false"], record=False)
    assert out["student"]["acc_top1"] == pytest.approx(results["student"]["acc_top1"])
    assert out["teacher"]["acc_top1"] == pytest.approx(results["teacher"]["acc_top1"])
    for fmt in ("torchscript", "safetensors"):
        record = export_run(run_dir, fmt, images=16)
        assert record["check"]["passed"] and record["check"]["max_abs_diff"] == 0.0
    pytest.importorskip("onnxscript")
    with pytest.raises(ValueError, match=r"format=onnx cannot hold the quantised student 'cnn_tiny-w4a8' \(4-bit weights.*format=torchscript"):
        export_run(run_dir, "onnx")
    assert not (run_dir / "export" / "student.onnx").exists()


# --- an edited card, images of another size --------------------------------------------------------
def test_an_edited_card_is_refused_naming_the_field_and_the_shapes(quantised, tmp_path: Path) -> None:
    import shutil

    run_dir, _ = quantised
    for name in ("student.json", "student.pt", "results.json"):
        shutil.copy(run_dir / name, tmp_path / name)
    card = json.loads((tmp_path / "student.json").read_text())
    (tmp_path / "student.json").write_text(json.dumps({**card, "num_classes": 7}))
    with pytest.raises(ValueError, match=r"num_classes=7 but the weights' classifier model.fc.weight has shape \[10, \d+\] \(10 classes\)"):
        kdexp.load_student(tmp_path)
    (tmp_path / "student.json").write_text(json.dumps({**card, "config": {"name": "cnn_small"}}))
    with pytest.raises(ValueError, match=r"do not fit the model .*student.json describes.*config \(name 'cnn_small'"):
        kdexp.load_student(tmp_path)


@pytest.fixture(scope="module")
def sweep_job(tmp_path_factory) -> Path:
    """A student-only mlp run in a folder named as a sweep job's (``key=value,key=value``)."""
    tmp = tmp_path_factory.mktemp("sweep")
    run_dir, _ = tiny_run(tmp, "method=vanilla,student=mlp", "method=vanilla", "student=mlp")
    return run_dir


def test_mlp_student_on_images_of_another_size_is_refused_naming_the_shapes(sweep_job, capsys) -> None:
    from kdexp.evaluation import main

    assert main([f"run={sweep_job}", "data.image_shape=[1,32,32]", "profile.enabled=false"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "has images of shape [1, 32, 32] but the student (mlp) was built for [1, 28, 28]" in message


def test_kdexp_export_takes_a_sweep_job_folder_as_its_run(sweep_job, capsys, monkeypatch) -> None:
    from kdexp.exporting import main, parse_args

    pytest.importorskip("onnxscript")
    assert "=" in sweep_job.name
    assert parse_args([str(sweep_job), "format=onnx", "data.test_size=16"]) == (str(sweep_job), {"format": "onnx"}, ["data.test_size=16"])
    assert parse_args([f"run={sweep_job}", "images=8"]) == (str(sweep_job), {"images": 8}, [])
    main([str(sweep_job), "format=onnx", "images=16"])
    assert "Wrote" in capsys.readouterr().out and (sweep_job / "export" / "student.onnx").is_file()
    monkeypatch.chdir(sweep_job.parent)  # the folder name alone, relative, as a shell in the sweep folder gives it
    main([f"run={sweep_job.name}", "format=torchscript", "images=16"])
    records = json.loads((sweep_job / "exports.json").read_text())
    assert records["student.onnx"]["check"]["passed"] and records["student.torchscript"]["check"]["passed"]
    with pytest.raises(ValueError, match="give exactly one run folder"):
        parse_args([str(sweep_job), f"run={sweep_job}"])


# --- jointly trained teachers ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["apprentice_joint", "projection_joint", "rocket"])
def test_a_jointly_trained_teacher_follows_teacher_and_is_saved(method: str, tmp_path: Path) -> None:
    run_dir, results = tiny_run(tmp_path, "run", f"method={method}", "teacher=cnn_small", "student=cnn_tiny")
    assert results["run"]["teacher"] == "cnn_small"
    assert results["run"]["teacher_source"]["source"] == "trained jointly"
    card = json.loads((run_dir / "teacher.json").read_text())
    assert card["name"] == "cnn_small" and card["weights"] == "teacher.pt"
    teacher = kdexp.load_student(run_dir, role="teacher")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    prefix = "booster." if method == "rocket" else "trainer_net."
    assert all(torch.equal(v, ckpt[prefix + k]) for k, v in teacher.state_dict().items())
    assert not list((tmp_path / "cache").glob("*.pt"))  # never cached as a frozen teacher
    out = kdexp.evaluate(run_dir, ["profile.enabled=false"], record=False)
    assert out["teacher"]["acc_top1"] == pytest.approx(results["teacher"]["acc_top1"])
    assert out["student"]["acc_top1"] == pytest.approx(results["student"]["acc_top1"])
    from_ckpt = kdexp.load_student(run_dir / "checkpoints" / "last.ckpt", role="teacher")
    assert all(torch.equal(from_ckpt.state_dict()[k], v) for k, v in teacher.state_dict().items())


def test_apprentice_finetune_that_never_quantises_is_refused_before_any_work(tmp_path: Path) -> None:
    from kdexp.errors import SetupError

    with pytest.raises(SetupError, match=r"method.fp_epochs=2 >= trainer.max_epochs=2"):
        tiny_run(
            tmp_path, "run", "method=apprentice_finetune", "method.fp_epochs=2", "trainer.max_epochs=2",
            "teacher=cnn_tiny", "+student.quantize.weight_bits=4", "+student.quantize.activation_bits=8",
        )
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "checkpoints").exists()
