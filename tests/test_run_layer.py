"""The run layer's shape: one trainer factory (the teacher trains under the NaN guard too), one
owner of last.ckpt's location, no method named in the run layer, short functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO
from kdexp.teacher import cache as teachers
from kdexp.callbacks import FiniteLossGuard, NonFiniteLossError
from kdexp.data.fake import FakeDataModule
from kdexp.distributed import resume_checkpoint
from kdexp.methods import METHODS
from kdexp.models import build_model
from kdexp.tools.trainer import build_trainer
from kdexp.runner.folder import last_checkpoint_path

RUN_LAYER = sorted((REPO / "kdexp" / "runner").glob("*.py")) + [REPO / "kdexp" / n for n in ("train.py", "results.py", "report/__init__.py")]


def test_every_trainer_has_the_nan_guard() -> None:
    trainer = build_trainer({"accelerator": "cpu"}, [], False)
    assert sum(isinstance(c, FiniteLossGuard) for c in trainer.callbacks) == 1
    guard = FiniteLossGuard()
    trainer = build_trainer({"accelerator": "cpu"}, [guard], False)
    assert [c for c in trainer.callbacks if isinstance(c, FiniteLossGuard)] == [guard]


def test_a_diverging_teacher_stops_at_the_first_nan_loss(tmp_path: Path) -> None:
    """The teacher's training is built by the same factory: a recipe whose loss overflows stops
    with the guard's error instead of caching NaN weights."""
    dm = FakeDataModule(image_shape=(1, 28, 28), train_size=64, test_size=32, batch_size=16)
    dm.setup("fit")
    teacher = build_model({"name": "cnn_tiny"}, 10, 1)
    recipe = {"max_epochs": 1, "optimizer": {"name": "sgd", "lr": 1e38, "momentum": 0.0}, "scheduler": {"name": "none"}}
    trainer_cfg = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
    with pytest.raises(NonFiniteLossError):
        teachers.train_teacher(teacher, dm, recipe, trainer_cfg, tmp_path / "teacher")


def test_last_ckpt_location_has_one_owner(tmp_path: Path) -> None:
    """A custom checkpoint dirpath is where ckpt_path=last, auto-resume and messages look."""
    custom = tmp_path / "elsewhere"
    cfg = OmegaConf.create({
        "paths": {"output_dir": str(tmp_path / "run")},
        "callbacks": {"last_checkpoint": {"dirpath": str(custom)}},
    })
    assert last_checkpoint_path(cfg) == custom / "last.ckpt"
    custom.mkdir()
    (custom / "last.ckpt").write_bytes(b"x")
    found = resume_checkpoint(None, tmp_path / "run", "always", last=last_checkpoint_path(cfg))
    assert found == str(custom / "last.ckpt")
    default = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "callbacks": {}})
    assert last_checkpoint_path(default) == tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_no_method_is_named_in_the_run_layer() -> None:
    """No string equal to a method's name, no method-specific key (generations, cohort) and no
    ``student<i>`` pattern in the run layer's code (docstrings and comments may give examples).
    ``vanilla`` is allowed: the report's baseline is the student trained alone."""
    keys = {"generations", "generation", "cohort"}
    found = []
    for path in RUN_LAYER:
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if ((text in METHODS and text != "vanilla") or text in keys or (text and re.search(r"student\\d|student\d", text))
                    or name in keys):
                found.append(f"{path.name}:{node.lineno}: {text or name}")
    assert not found, found


def test_run_layer_functions_are_short() -> None:
    long = [
        f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in RUN_LAYER if path.parent.name == "runner" or path.name == "train.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, long


def test_a_tiny_run_in_process(tiny_cfg) -> None:
    """The run layer without a subprocess: the composed tiny config in, results.json out."""
    import json

    from omegaconf import open_dict

    from kdexp.runner.experiment import run_experiment

    with open_dict(tiny_cfg):
        tiny_cfg.logger = None
        tiny_cfg.profile.enabled = False
    results = run_experiment(tiny_cfg)
    saved = json.loads((Path(tiny_cfg.paths.output_dir) / "results.json").read_text())
    assert saved["run"]["status"] == "complete" and saved["run"]["method"] == "kd"
    assert saved["student"]["acc_top1"] == results["student"]["acc_top1"]
    assert 0.0 <= saved["student"]["val_acc_top1"] <= 1.0 and saved["run"]["teacher_source"]["source"] == "trained"
    assert (Path(tiny_cfg.paths.output_dir) / "student.pt").is_file()
    # Where the wall time went (kdexp.phases), in the order a run goes through them.
    spent = saved["run"]["phases_s"]
    assert [p for p in spent if p != "start-up"] == ["data", "teacher", "training", "evaluation", "profiling", "writing"]
    assert all(seconds >= 0 for seconds in spent.values()) and spent["training"] > 0
