"""The whole run's work is done once: the best-epoch test is skipped when the best epoch is the
last one, and otherwise only the student is tested again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from conftest import make_method
from kdexp.runner import fit


class CountingTrainer(SimpleNamespace):
    """What ``test_best_checkpoint`` reads of a Trainer, with ``test`` recording its calls."""

    def test(self, module, datamodule=None, ckpt_path=None, verbose=False):
        self.calls.append((ckpt_path, module.evaluate_teacher))
        return [{"test/student_acc": 0.5}]


def _trainer(tmp_path: Path, best_epoch_index: int, epochs_done: int) -> CountingTrainer:
    path = tmp_path / f"epoch={best_epoch_index}-step=8.ckpt"
    path.write_bytes(b"")
    callback = SimpleNamespace(best_model_path=str(path), monitor="val/acc")
    return CountingTrainer(checkpoint_callback=callback, current_epoch=epochs_done, loggers=[], calls=[])


def test_the_best_epoch_being_the_last_is_not_tested_twice(tmp_path):
    module = make_method("kd", "cnn_tiny", "cnn_tiny")
    trainer = _trainer(tmp_path, best_epoch_index=2, epochs_done=3)
    last = {"test/student_acc": 0.75, "test/teacher_acc": 0.9}
    assert fit.test_best_checkpoint(trainer, module, None, last) == (3, last)
    assert trainer.calls == []


def test_an_earlier_best_epoch_tests_only_the_student_again(tmp_path):
    module = make_method("kd", "cnn_tiny", "cnn_tiny")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = _trainer(tmp_path, best_epoch_index=0, epochs_done=3)
    epoch, metrics = fit.test_best_checkpoint(trainer, module, None, {"test/student_acc": 0.75})
    assert (epoch, metrics) == (1, {"test/student_acc": 0.5})
    assert [flag for _, flag in trainer.calls] == [False]  # the teacher was not evaluated again
    assert module.evaluate_teacher is True
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def _run(kdexp_run, tmp_path: Path, name: str, *extra: str):
    from conftest import TINY_RUN

    # no profiling: these tests read accuracies and files, never timings
    return kdexp_run(*TINY_RUN, "method=kd", "logger=none", "profile.enabled=false", *extra,
                     cache_dir=tmp_path / "cache", run_dir=tmp_path / name)


def test_the_teachers_test_logits_are_stored_once_and_give_the_same_numbers(kdexp_run, tmp_path):
    """The first run fills the store in its own test pass; a second run with the store reports
    exactly the teacher accuracy and agreement that a run computing them online reports."""
    import json

    first = _run(kdexp_run, tmp_path, "first")
    assert first.exit_code == 0, first.message
    (entry,) = (tmp_path / "cache" / "teacher_test_logits").glob("*.pt")
    second = _run(kdexp_run, tmp_path, "second")
    online = _run(kdexp_run, tmp_path, "online", "performance.teacher_test_logits=false")
    assert second.exit_code == 0 and online.exit_code == 0, (second.message, online.message)
    results = {n: json.loads((tmp_path / n / "results.json").read_text()) for n in ("first", "second", "online")}
    for name in ("first", "second"):
        assert results[name]["teacher"]["acc_top1"] == results["online"]["teacher"]["acc_top1"]
        assert results[name]["comparison"]["agreement_top1"] == results["online"]["comparison"]["agreement_top1"]
        assert results[name]["student"]["acc_top1"] == results["online"]["student"]["acc_top1"]
    stored = torch.load(entry, weights_only=True)["logits"]
    assert stored.shape[1] == 10 and torch.isfinite(stored).all()


def test_a_complete_store_answers_without_running_the_teacher(tmp_path):
    from kdexp.teacher.test_logits import TeacherTestLogits

    teacher = torch.nn.Linear(2, 3)
    parts = {"data_cfg": {"name": "fake"}, "device": "cpu", "precision": "32-true"}
    store = TeacherTestLogits(tmp_path, parts, size=4, num_classes=3)
    store.bind(teacher)
    calls = []

    def forward(x):
        calls.append(len(x))
        return x @ torch.ones(2, 3)

    x = torch.arange(8, dtype=torch.float32).view(4, 2)
    assert not store.save_if_filled()  # nothing seen yet
    store.logits_for(torch.tensor([0, 1]), x[:2], forward)
    assert not store.save_if_filled()  # half the test set
    store.logits_for(torch.tensor([2, 3]), x[2:], forward)
    assert store.save_if_filled() and calls == [2, 2]
    again = TeacherTestLogits(tmp_path, parts, size=4, num_classes=3)
    again.bind(teacher)
    assert again.complete
    assert torch.equal(again.logits_for(torch.tensor([3, 1]), x[:2], forward), forward(x)[[3, 1]])
    assert calls == [2, 2, 4]  # only the reference forward above: the store answered alone
    other_set = TeacherTestLogits(tmp_path, parts, size=5, num_classes=3)
    other_set.bind(teacher)
    assert not other_set.complete  # another test set
    with torch.no_grad():
        teacher.weight.add_(1.0)
    again.bind(teacher)  # the same store, now for other weights (e.g. a later anchor)
    assert not again.complete


def test_pretrained_weights_without_internet_name_the_key(monkeypatch):
    """torchvision's download fails offline: a clear error naming the weights, not a traceback."""
    import urllib.error

    import pytest
    import torchvision

    from kdexp.models.external import create_torchvision_model

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ValueError, match=r"weights='DEFAULT': the pretrained weights could not be downloaded.*teacher\.checkpoint"):
        create_torchvision_model("resnet18", num_classes=10, weights="DEFAULT")


def test_logger_none_writes_no_event_files_for_the_teacher_either(kdexp_run, tmp_path):
    outcome = _run(kdexp_run, tmp_path, "quiet")  # _run passes logger=none; the teacher is trained in this run
    assert outcome.exit_code == 0, outcome.message
    assert not list((tmp_path / "quiet").rglob("*tfevents*"))


def test_the_teachers_training_logits_are_kept_for_the_next_run(tmp_path, tiny_fashion_mnist, monkeypatch):
    """No augmentation: the teacher-output table is kept with the teacher after a run, and the next
    run with that teacher starts from it — no teacher forward in training at all — and trains to
    exactly the same student as a run that computes the logits online."""
    import copy
    import json

    from omegaconf import open_dict

    from conftest import TINY_RUN, compose_config
    from kdexp.methods.base import DistillationModule
    from kdexp.runner.experiment import run_experiment

    overrides = [o for o in TINY_RUN if not o.startswith("data")]
    base = compose_config(*overrides, "data=fashion_mnist", f"data.root={tiny_fashion_mnist}", "data.val_size=16",
                          "data.batch_size=16", "method=kd", "logger=none", "profile.enabled=false",
                          "trainer.max_epochs=2")

    def run(name: str, **performance):
        cfg = copy.deepcopy(base)
        with open_dict(cfg):
            cfg.paths = {"root_dir": str(tmp_path), "data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
                         "log_dir": str(tmp_path / "outputs"), "output_dir": str(tmp_path / name)}
            cfg.performance.update(performance)
        run_experiment(cfg)
        return json.loads((tmp_path / name / "results.json").read_text())

    first = run("first")
    assert first["run"]["teacher_cache"]["hit_rate"] == 0.5  # epoch 2 of 2 served from the run's own table
    (kept,) = (tmp_path / "cache" / "teacher_train_logits").glob("*.pt")

    forwards = []
    original = DistillationModule.teacher_forward
    monkeypatch.setattr(DistillationModule, "teacher_forward", lambda self, x: forwards.append(len(x)) or original(self, x))
    second = run("second")
    assert second["run"]["teacher_cache"]["hit_rate"] == 1.0 and forwards == []  # not one training view computed
    assert first["run"]["teacher_cache"]["kept_views_loaded"] == 0 and second["run"]["teacher_cache"]["kept_views_loaded"] == 48
    monkeypatch.setattr(DistillationModule, "teacher_forward", original)
    online = run("online", teacher_cache="off", teacher_train_logits=False)
    for results in (first, second):
        assert results["student"]["acc_top1"] == online["student"]["acc_top1"]
        assert results["student"]["val_acc_top1"] == online["student"]["val_acc_top1"]
    assert kept.stat().st_size > 0
