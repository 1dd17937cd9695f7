"""The whole run's work is done once: the best-epoch test is skipped when the best epoch is the
last one, and otherwise only the student is tested again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from conftest import make_method
from kdexp.run import fit


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
