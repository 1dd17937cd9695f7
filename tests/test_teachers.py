"""Teacher provisioning: cache keys, checkpoint formats, clear errors, one training per key."""

import threading
import time
from pathlib import Path

import pytest
import torch

from kdexp.teacher import cache as teachers
from kdexp import models
from kdexp.tools import weights
from kdexp.data.fake import FakeDataModule
from kdexp.models import build_model

TEACHER = {"source": "kdexp", "name": "cnn_tiny", "checkpoint": None, "seed": 0,
           "train": {"max_epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1}, "scheduler": {"name": "none"}}}
DATA = {"name": "fake", "image_shape": [1, 28, 28], "num_classes": 10, "batch_size": 32, "num_workers": 0}


def test_cache_key_tracks_what_changes_the_weights() -> None:
    key = teachers.teacher_cache_key(TEACHER, DATA)
    assert key == teachers.teacher_cache_key(dict(TEACHER), dict(DATA))
    assert key == teachers.teacher_cache_key(TEACHER, {**DATA, "num_workers": 8})  # loader only
    assert key == teachers.teacher_cache_key({**TEACHER, "checkpoint": None}, DATA)
    assert key != teachers.teacher_cache_key({**TEACHER, "seed": 1}, DATA)
    assert key != teachers.teacher_cache_key({**TEACHER, "name": "cnn_small"}, DATA)
    assert key != teachers.teacher_cache_key(TEACHER, {**DATA, "batch_size": 64})
    recipe = {**TEACHER["train"], "max_epochs": 2}
    assert key != teachers.teacher_cache_key({**TEACHER, "train": recipe}, DATA)
    # Precision is part of the recipe: inherited from the run's trainer unless the recipe sets it.
    assert key == teachers.teacher_cache_key(TEACHER, DATA, {"precision": "32-true", "devices": 4})
    assert key != teachers.teacher_cache_key(TEACHER, DATA, {"precision": "16-mixed"})


@pytest.mark.parametrize("wrap", ["raw", "lightning", "repdistiller", "ddp"])
def test_load_weights_accepts_common_checkpoint_formats(tmp_path: Path, wrap: str) -> None:
    source = build_model({"name": "cnn_tiny"}, 10, 1)
    state = source.module.state_dict()
    blob = {
        "raw": state,
        "lightning": {"state_dict": {f"student.{k}": v for k, v in state.items()}, "epoch": 3},
        "repdistiller": {"model": state, "epoch": 240},
        "ddp": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(blob, tmp_path / "t.pt")
    target = build_model({"name": "cnn_tiny"}, 10, 1)
    weights.load_weights(target, tmp_path / "t.pt", num_classes=10)
    for k, v in target.module.state_dict().items():
        assert torch.equal(v, state[k])


def test_missing_checkpoint(tmp_path: Path) -> None:
    model = build_model({"name": "cnn_tiny"}, 10, 1)
    with pytest.raises(FileNotFoundError, match="teacher.checkpoint=.*does not exist"):
        weights.load_weights(model, tmp_path / "nope.pt", 10)


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    model = build_model({"name": "cnn_tiny"}, 10, 1)
    with pytest.raises(ValueError, match="cannot be read as a checkpoint"):
        weights.load_weights(model, tmp_path / "bad.pt", 10)


def test_wrong_number_of_classes(tmp_path: Path) -> None:
    torch.save(build_model({"name": "cnn_tiny"}, 100, 1).module.state_dict(), tmp_path / "c100.pt")
    model = build_model({"name": "cnn_tiny"}, 10, 1)
    with pytest.raises(ValueError, match="predicts 100 classes but the data has 10"):
        weights.load_weights(model, tmp_path / "c100.pt", 10)


def test_wrong_architecture(tmp_path: Path) -> None:
    torch.save(build_model({"name": "cnn_small"}, 10, 1).module.state_dict(), tmp_path / "s.pt")
    model = build_model({"name": "cnn_tiny"}, 10, 1)
    with pytest.raises(ValueError, match="does not fit teacher.name='cnn_tiny'"):
        weights.load_weights(model, tmp_path / "s.pt", 10)


def test_concurrent_jobs_train_one_teacher_once(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def slow_train(teacher, datamodule, recipe, trainer_cfg, log_dir):
        calls.append(1)
        time.sleep(0.5)  # long enough for the other job to arrive while this one trains
        return {"test_acc": 0.5}

    monkeypatch.setattr(teachers, "train_teacher", slow_train)
    dm = FakeDataModule(image_shape=(1, 28, 28))
    sources = []

    def job() -> None:
        architecture = build_model(models.architecture_cfg(TEACHER), 10, 1)
        _, info = teachers.provide_teacher(
            teachers.TeacherRequest(architecture, TEACHER, DATA, dm, {}, tmp_path / "cache", tmp_path / "log")
        )
        sources.append(info["source"])

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(sources) == ["cache", "cache", "trained"]
    assert len(list((tmp_path / "cache").glob("cnn_tiny-*.pt"))) == 1


# --- issue 17, finding 1: a debug run must not poison the cache --------------------------------
def _provide(tmp_path: Path, trainer_cfg: dict, teacher: dict = TEACHER):
    dm = FakeDataModule(image_shape=(1, 28, 28), train_size=64, test_size=32, batch_size=32)
    dm.setup("fit")
    architecture = build_model(models.architecture_cfg(teacher), 10, 1)
    return teachers.provide_teacher(teachers.TeacherRequest(architecture, teacher, DATA, dm, trainer_cfg, tmp_path / "cache", tmp_path / "log"))


def test_a_debug_run_trains_its_teacher_uncached_and_the_next_run_trains_the_real_one(tmp_path: Path) -> None:
    _, debug = _provide(tmp_path, {"fast_dev_run": True, "max_epochs": 1})
    assert debug["source"] == "trained" and debug["cached"] is False
    assert "trainer.fast_dev_run=True" in debug["summary"] and "not cached" in debug["summary"]
    assert not list((tmp_path / "cache").glob("*.pt"))  # nothing a later run could reuse
    _, real = _provide(tmp_path, {"max_epochs": 1})
    assert real["source"] == "trained" and real["epochs"] == 1  # the recipe's epoch, not one step
    _, again = _provide(tmp_path, {"max_epochs": 1})
    assert again["source"] == "cache" and again["epochs"] == 1
    assert again["summary"].startswith(f"cache {again['key'][:4]}…, trained 1 epoch, test ")


def test_run_level_training_settings_never_reach_the_teacher() -> None:
    run = {"accelerator": "cpu", "precision": "32-true", "max_epochs": 9, "max_steps": 3, "max_time": "00:00:01",
           "limit_train_batches": 2, "gradient_clip_val": 1.0, "accumulate_grad_batches": 4, "devices": 1}
    kwargs = teachers.teacher_trainer_kwargs(TEACHER["train"], run)
    assert kwargs == {"accelerator": "cpu", "precision": "32-true", "max_epochs": 1}
    assert set(teachers.student_only_settings(run)) == {
        "max_steps", "max_time", "limit_train_batches", "gradient_clip_val", "accumulate_grad_batches"}
    # The recipe can set them for the teacher, and then they are part of its key.
    recipe = {**TEACHER["train"], "limit_train_batches": 2}
    assert teachers.teacher_trainer_kwargs(recipe, run)["limit_train_batches"] == 2
    assert teachers.teacher_cache_key({**TEACHER, "train": recipe}, DATA) != teachers.teacher_cache_key(TEACHER, DATA)
    # Settings that reach the teacher and change its weights change its key.
    assert teachers.teacher_cache_key(TEACHER, DATA, {"deterministic": True}) != teachers.teacher_cache_key(TEACHER, DATA)
    assert teachers.teacher_cache_key(TEACHER, DATA, run) == teachers.teacher_cache_key(TEACHER, DATA)


def test_provenance_lines() -> None:
    assert teachers.provenance({"source": "checkpoint", "path": "/w/t.pt"}) == "checkpoint /w/t.pt"
    line = teachers.provenance({"source": "cache", "key": "95a9abcd", "epochs": 4, "test_acc": 0.9305})
    assert line == "cache 95a9…, trained 4 epochs, test 93.05%"


# --- round 3, item 11: teacher.quantize, and never a cache entry that cannot be loaded back ------------
def test_teacher_quantize_is_refused_before_any_work(tmp_path: Path, tiny_cfg) -> None:
    from omegaconf import open_dict

    from kdexp.errors import SetupError
    from kdexp.runner.build import prepare
    from kdexp.runner.spec import RunSpec

    with open_dict(tiny_cfg):
        tiny_cfg.teacher.quantize = {"weight_bits": 4}
    with pytest.raises(SetupError, match=r"teacher\.quantize=\{'weight_bits': 4\} is not supported.*must be absent"
                                         r".*student\.quantize\.weight_bits in \[2, 4, 8\]"):
        prepare(RunSpec.read(tiny_cfg))
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.pt"))  # no teacher trained
    with pytest.raises(ValueError, match=r"teacher\.quantize"):  # the Python API's way in, too
        _provide(tmp_path, {"max_epochs": 1}, {**TEACHER, "quantize": {"weight_bits": 4, "activation_bits": 8}})
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_an_entry_that_does_not_load_back_is_never_cached(tmp_path: Path, monkeypatch) -> None:
    """A trained teacher whose weights do not fit a fresh architecture (as a quantisation-aware one's
    did not) fails the run, every run, and leaves no entry that later runs set aside and retrain."""
    trained = []

    def train_an_extra_buffer(teacher, datamodule, recipe, trainer_cfg, log_dir, **kwargs):
        trained.append(1)
        teacher.module.register_buffer("extra", torch.zeros(1))  # not in the architecture a later run builds
        return {"test_acc": 0.5}

    monkeypatch.setattr(teachers, "train_teacher", train_an_extra_buffer)
    for attempt in (1, 2):
        with pytest.raises(RuntimeError, match=r"does not load back, so it was not cached.*unexpected keys \['extra'\]"):
            _provide(tmp_path, {"max_epochs": 1})
        assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []  # nothing, not even set aside
    assert len(trained) == 2

    monkeypatch.undo()
    fresh, info = _provide(tmp_path, {"max_epochs": 1})
    assert info["source"] == "trained"
    again, info = _provide(tmp_path, {"max_epochs": 1})
    assert info["source"] == "cache"  # a good entry is named and served
    assert all(torch.equal(a, b) for a, b in zip(fresh.module.state_dict().values(), again.module.state_dict().values()))
