"""Rocket launching: the gradient block, shared lower stages, and a run that trains the booster."""

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from kdexp.methods import build_method, method_class
from kdexp.methods.rocket import rocket_hint_loss
from kdexp.models import build_model

SGD = {"name": "sgd", "lr": 0.1}
NONE = {"name": "none"}
SHAPE = (1, 28, 28)


def rocket(light: str = "cnn_tiny", booster: str = "cnn_small", **options):
    torch.manual_seed(0)
    student = build_model({"name": light}, 10, 1)
    teacher = build_model({"name": booster}, 10, 1)
    return build_method({"name": "rocket", **options}, student, teacher, 10, SHAPE, SGD, NONE)


def grads(module, x, y, terms_used):
    module.zero_grad()
    _, terms = module.training_losses(x, y)
    sum(w * v for name, (w, v) in terms.items() if name in terms_used).backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in module.named_parameters()}


def test_hint_loss_is_the_squared_l2_distance_of_the_logits() -> None:
    light = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    booster = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, -4.0]])
    # ‖l − z‖² = 5 and 25 over C = 3 classes, averaged over the batch of 2.
    assert rocket_hint_loss(light, booster).item() == pytest.approx((5.0 + 25.0) / 3 / 2)


def test_booster_is_trainable_and_a_registered_child() -> None:
    module = rocket()
    assert module.teacher is module.booster and module.booster.training
    assert all(p.requires_grad for p in module.booster.parameters())
    names = [n for n, _ in module.named_parameters()]
    assert any(n.startswith("booster.") for n in names)  # optimizer, checkpoint and DDP see it
    assert any(k.startswith("booster.") for k in module.state_dict())
    module.train()
    assert module.booster.training  # not forced into eval like a frozen teacher
    assert set(module.report_models()) == {"student", "teacher"}
    assert method_class("rocket").teacher_use.trained_with_student
    assert not method_class("kd").teacher_use.trained_with_student


def test_gradient_block_keeps_the_hint_out_of_the_booster() -> None:
    module = rocket()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    full = grads(module, x, y, {"ce", "booster_ce", "hint"})
    booster_only = grads(module, x, y, {"booster_ce"})
    hint_only = grads(module, x, y, {"hint"})
    booster_params = [n for n in full if n.startswith("booster.")]
    for name in booster_params:  # the same with and without the hint term
        assert torch.allclose(full[name], booster_only[name], atol=1e-7), name
        assert hint_only[name].abs().sum() == 0
    # The hint does move the light net.
    assert any(hint_only[n].abs().sum() > 0 for n in full if n.startswith("student."))
    # Without the block (the ablation) the hint reaches the booster.
    unblocked = rocket(gradient_block=False)
    hint_unblocked = grads(unblocked, x, y, {"hint"})
    assert any(hint_unblocked[n].abs().sum() > 0 for n in hint_unblocked if n.startswith("booster."))


def test_shared_stages_receive_gradients_from_both_nets() -> None:
    module = rocket("cnn_medium", "cnn_large", shared_stages=1)
    assert module.student.blocks[0] is module.booster.blocks[0]
    assert module.shared == ["blocks.0"]
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    shared_ids = {id(p) for p in module.booster.blocks[0].parameters()}
    shared = [n for n, p in module.named_parameters() if id(p) in shared_ids]  # listed once
    assert len(shared) == len(shared_ids) == 6  # cnn_large: two (conv, BN weight, BN bias)
    light_ce = grads(module, x, y, {"ce"})
    booster_ce = grads(module, x, y, {"booster_ce"})
    hint = grads(module, x, y, {"hint"})
    total = grads(module, x, y, {"ce", "booster_ce", "hint"})
    for name in shared:
        assert light_ce[name].abs().sum() > 0 and booster_ce[name].abs().sum() > 0 and hint[name].abs().sum() > 0
        assert torch.allclose(total[name], light_ce[name] + booster_ce[name] + hint[name], atol=1e-6)
    # The booster's own upper layers still learn from its labels only.
    upper = [n for n in total if n.startswith("booster.") and n not in shared]
    for name in upper:
        assert torch.allclose(total[name], booster_ce[name], atol=1e-7), name


def test_shared_stages_that_do_not_fit_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="shared_stages=1.*same-family"):
        rocket("cnn_tiny", "cnn_large", shared_stages=1)
    with pytest.raises(ValueError, match="at most 2"):
        rocket("cnn_medium", "cnn_large", shared_stages=3)


FAKE = (
    "data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32",
    "trainer.max_epochs=1", "profile.min_run_time=0.02", "profile.throughput_batch=4",
)


def test_rocket_run_trains_the_booster_and_reports_it(kdexp_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    outcome = kdexp_run(
        *FAKE, "method=rocket", "teacher=cnn_large", "student=cnn_medium", "method.shared_stages=1",
        cache_dir=tmp_path / "cache", run_dir=run_dir,
    )
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["teacher_source"]["source"] == "trained jointly"
    assert results["rocket"]["teacher_trained_jointly"] and results["rocket"]["shared_stages"] == ["blocks.0"]
    assert 0 <= results["teacher"]["acc_top1"] <= 1 and results["teacher"]["params"] > results["student"]["params"]
    assert results["teacher"]["latency_ms_b1"] > 0 and results["student"]["latency_ms_b1"] > 0
    assert not list((tmp_path / "cache").glob("*.pt"))  # never cached as a teacher
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("booster.") for k in ckpt["state_dict"])
    params = {id(p) for p in build_model({"name": "cnn_large"}, 10, 1).module.parameters()}
    light = {id(p) for p in build_model({"name": "cnn_medium"}, 10, 1).module.parameters()}
    n_booster, n_light_own = len(params), len(light) - 3  # the light net's first stage is the booster's
    assert len(ckpt["optimizer_states"][0]["param_groups"][0]["params"]) == n_booster + n_light_own
    assert (run_dir / "teacher.pt").is_file()


def test_rocket_refuses_a_torchscript_teacher_before_training(kdexp_run, tmp_path: Path) -> None:
    script = torch.jit.script(build_model({"name": "cnn_large"}, 10, 1).module)
    path = tmp_path / "frozen.pt"
    script.save(str(path))
    outcome = kdexp_run(
        *FAKE, "method=rocket", "teacher=cnn_large", f"teacher.checkpoint={path}",
        cache_dir=tmp_path / "cache", run_dir=tmp_path / "run",
    )
    assert outcome.exit_code == 2, outcome.message
    assert "TorchScript archive" in outcome.message and "trains its teacher" in outcome.message
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.starts_first
def test_rocket_under_cpu_ddp_trains_the_booster_in_the_wrapper(tmp_path: Path) -> None:
    """Two gloo processes: every booster and light-net parameter gets a gradient (no 'unused
    parameters' error), and both ranks end with the same booster (DDP synchronised it)."""
    run_dir = tmp_path / "ddp"
    proc = run_cli(
        *FAKE, "method=rocket", "teacher=cnn_large", "student=cnn_medium", "method.shared_stages=1",
        "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
        cache_dir=tmp_path / "cache", run_dir=run_dir, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["teacher_source"]["source"] == "trained jointly"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    fresh = build_model({"name": "cnn_large"}, 10, 1).module.state_dict()
    trained = {k[len("booster."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("booster.")}
    assert set(trained) == set(fresh)
    assert not torch.equal(trained["fc.weight"], fresh["fc.weight"])  # the booster was trained
