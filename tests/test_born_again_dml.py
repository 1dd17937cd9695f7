"""Born-Again chains and deep mutual learning."""

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import make_method, run_cli
from kdexp.runner.chain import ensemble_accuracy, frozen_copy
from kdexp.methods import method_class
from kdexp.models import build_model

SHAPE = (1, 28, 28)


def dml(**options):
    return make_method("dml", teacher=None, **options)


def test_dml_cohort_of_mixed_architectures() -> None:
    module = dml(cohort=["cnn_tiny", "cnn_small", "cnn_tiny"])
    assert [type(m).__name__ for m in module.members] == ["SmallCNN"] * 3
    assert list(module.report_models()) == ["student0", "student1", "student2"]
    assert module.members[1].fc.in_features == 64  # cnn_small
    assert len({id(m) for m in module.members}) == 3


@pytest.mark.parametrize("options", [{"cohort_size": 3}, {"cohort": ["cnn_tiny"] * 3}])
def test_dml_members_start_from_different_weights(options) -> None:
    torch.manual_seed(0)
    student = build_model({"name": "cnn_tiny"}, 10, 1)
    # seed 0 again, as the pipeline does before building the method
    module = make_method("dml", student, None, **options)
    weights = [m.fc.weight for m in module.members]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])


def test_dml_one_summed_loss_reaches_every_student() -> None:
    module = dml(cohort_size=3)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    _, terms = module.training_losses(x, y)
    assert set(terms) == {"ce", "dml"}
    sum(w * v for w, v in terms.values()).backward()
    for member in module.members:  # no unused parameters: DDP needs every one to get a gradient
        assert all(p.grad is not None for p in member.parameters())


def test_dml_peer_term_equals_the_paper_formula() -> None:
    module = dml(cohort_size=2)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    _, terms = module.training_losses(x, y)
    with torch.no_grad():
        p0, p1 = (m(x).softmax(1) for m in module.members)
    kl = lambda p, q: (p * (p.log() - q.log())).sum(1).mean()  # KL(p || q), batch mean
    assert terms["dml"][1].item() == pytest.approx((kl(p1, p0) + kl(p0, p1)).item(), rel=1e-4)


def test_dml_needs_a_teacher_only_for_the_teacher_term() -> None:
    cls = method_class("dml")
    assert not cls.requires_teacher({}) and cls.requires_teacher({"kd_weight": 0.5})
    with pytest.raises(ValueError, match="at least 2"):
        dml(cohort=["cnn_tiny"])


def test_born_again_never_teaches_itself() -> None:
    built = build_model({"name": "cnn_tiny"}, 10, 1)
    copy = frozen_copy(built)
    assert not {id(p) for p in copy.module.parameters()} & {id(p) for p in built.module.parameters()}
    assert not any(p.requires_grad for p in copy.module.parameters())
    with pytest.raises(ValueError, match="shares parameters"):
        make_method("born_again", built, built)


class Fixed(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


class Loader:
    def __init__(self, batches):
        self.batches = batches

    def test_dataloader(self):
        return self.batches


def test_ensemble_averages_softmax_not_votes() -> None:
    # Model A is confidently right on sample 0, B weakly wrong: the average follows A.
    a = Fixed(torch.tensor([[5.0, 0.0], [0.0, 0.1]]))
    b = Fixed(torch.tensor([[0.0, 0.2], [3.0, 0.0]]))
    data = Loader([(torch.zeros(2, 1), torch.tensor([0, 1]))])
    assert ensemble_accuracy([a, b], data, torch.device("cpu")) == 0.5
    assert ensemble_accuracy([a], data, torch.device("cpu")) == 1.0


CHAIN = (
    "data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32",
    "teacher=cnn_small", "student=cnn_tiny", "method=born_again", "method.generations=2",
    "trainer.max_epochs=1", "teacher.train.max_epochs=1",
    "profile.min_run_time=0.02", "profile.throughput_batch=4",
)


def test_born_again_chain_end_to_end_and_resume(kdexp_run, shared_cache, tmp_path: Path) -> None:
    run_dir = tmp_path / "chain"
    outcome = kdexp_run(*CHAIN, cache_dir=shared_cache, run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((run_dir / "results.json").read_text())
    assert [g["generation"] for g in results["generations"]] == [0, 1, 2]
    assert all("acc_top1" in g and g["params"] > 0 and g["latency_ms_b1"] > 0 for g in results["generations"])
    assert results["ensemble"]["members"] == [1, 2]
    assert 0 <= results["ensemble"]["acc_top1"] <= 1
    for gen in (1, 2):  # one sub-run per generation, each with its own checkpoint and curves
        sub = run_dir / f"gen{gen}"
        assert (sub / "checkpoints" / "last.ckpt").is_file() and (sub / "student.pt").is_file()
        assert list((sub / "tensorboard").glob("events.out.tfevents.*"))
        gen_results = json.loads((sub / "results.json").read_text())
        assert gen_results["student"]["acc_top1"] == results["generations"][gen]["acc_top1"]
    second = json.loads((run_dir / "gen2" / "results.json").read_text())
    assert second["teacher"]["acc_top1"] == results["generations"][1]["acc_top1"]  # gen 1 taught gen 2

    # Resume: generation 2 lost its results; generation 1 is reused, generation 2 retrained.
    stamp = os.path.getmtime(run_dir / "gen1" / "student.pt")
    (run_dir / "gen2" / "results.json").unlink()
    outcome = kdexp_run(*CHAIN, cache_dir=shared_cache, run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    assert os.path.getmtime(run_dir / "gen1" / "student.pt") == stamp
    assert (run_dir / "gen2" / "results.json").is_file()


def test_dml_with_teacher_term_under_cpu_ddp(tmp_path: Path) -> None:
    """Two gloo processes: no 'unused parameters' error, the frozen teacher is not wrapped in DDP."""
    proc = run_cli(
        "data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32",
        "teacher=cnn_small", "student=cnn_tiny", "method=dml", "method.kd_weight=0.5",
        "method.cohort=[cnn_tiny,cnn_small]", "trainer.max_epochs=2", "teacher.train.max_epochs=1",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
        "profile.min_run_time=0.02", "profile.throughput_batch=4",
        cache_dir=tmp_path / "cache", run_dir=tmp_path / "ddp",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["run"]["cohort"] == ["student0", "student1"]
    assert results["student1"]["params"] == 24058  # cnn_small
    assert results["teacher"]["acc_top1"] >= 0 and "acc_top1" in results["ensemble"]
    assert results["run"]["best_student"] in ("student0", "student1")
