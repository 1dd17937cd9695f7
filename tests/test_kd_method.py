"""The kd method module: frozen teacher, gradients into the student only, logged loss parts."""

import pytest
import torch

from conftest import make_method
from kdexp.losses import kd_loss


def make_kd(**method):
    module = make_method("kd", **method)
    return module, module.teacher, module.student


def test_defaults_are_the_benchmark_recipe() -> None:
    module, _, _ = make_kd()
    assert (module.temperature, module.ce_weight, module.kd_weight) == (4.0, 0.1, 0.9)


def test_loss_is_weighted_ce_plus_kd() -> None:
    module, teacher, student = make_kd(temperature=2.0, ce_weight=0.3, kd_weight=0.7)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    module.train()
    logits, terms = module.training_losses(x, y)
    with torch.no_grad():
        t = teacher(x)
    expected = 0.3 * torch.nn.functional.cross_entropy(logits, y) + 0.7 * kd_loss(logits, t, 2.0)
    total = sum(w * v for w, v in terms.values())
    assert set(terms) == {"ce", "kd"}
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradients_reach_only_the_student() -> None:
    module, teacher, student = make_kd()
    module.train()
    _, terms = module.training_losses(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    sum(w * v for w, v in terms.values()).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training  # module.train() leaves the teacher in eval mode


def test_teacher_is_outside_optimizer_and_checkpoint() -> None:
    module, teacher, _ = make_kd()
    params = {id(p) for p in module.parameters()}
    assert not params & {id(p) for p in teacher.parameters()}
    assert not any(k.startswith("teacher") for k in module.state_dict())


def test_unknown_option_names_allowed_keys() -> None:
    with pytest.raises(ValueError, match=r"no option\(s\) \['temp'\].*temperature"):
        make_kd(temp=3)


def test_vanilla_needs_no_teacher() -> None:
    module = make_method("vanilla", teacher=None)
    _, terms = module.training_losses(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    assert set(terms) == {"ce"} and module.teacher is None
