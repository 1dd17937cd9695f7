"""The projection network student: fixed LSH bits, identical reload, joint training, errors."""

import io

import pytest
import torch

from kdexp.methods import build_method
from kdexp.models import build_model
from kdexp.profile import count_macs
from conftest import train_steps

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
NO_SCHED = {"name": "none"}


def projection(**kw):
    return build_model({"name": "projection", **kw}, 10, 1, (1, 28, 28))


def test_bits_are_signs_of_fixed_random_projections() -> None:
    net = projection(projections=4, bits=3).module
    x = torch.randn(5, 1, 28, 28)
    planes = net.projection_signs.float() * 2 - 1
    assert planes.shape == (12, 784) and set(planes.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(net.hash(x), (x.flatten(1) @ planes.T > 0).float())
    assert not any(p is net.projection_signs for p in net.parameters())  # fixed, not trained


def test_saved_and_reloaded_student_gives_identical_outputs() -> None:
    torch.manual_seed(0)
    net = projection().module.eval()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    torch.manual_seed(123)  # a different dense initialisation; the seed option stays the same
    fresh = projection(projection_seed=7).module.eval()
    x = torch.randn(8, 1, 28, 28)
    assert not torch.equal(fresh(x), net(x))
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), net(x))


def test_images_of_another_size_are_refused() -> None:
    net = projection().module
    with pytest.raises(ValueError, match=r"built .* for images of shape \(1, 28, 28\), got \(1, 32, 32\)"):
        net(torch.randn(2, 1, 32, 32))
    other = build_model({"name": "projection"}, 10, 1, (1, 32, 32)).module
    with pytest.raises(ValueError, match="image size"):
        other.load_state_dict(net.state_dict())
    with pytest.raises(ValueError, match=r"student.trained_input_shape=\[1, 28, 28\] but the data's images are \[3, 32, 32\]"):
        build_model({"name": "projection", "trained_input_shape": [1, 28, 28]}, 10, 3, (3, 32, 32))


def test_memory_and_macs() -> None:
    net = projection(projections=60, bits=10, hidden=[128]).module
    report = net.memory_report()
    dense = 600 * 128 + 128 + 128 * 10 + 10
    assert report["dense_params"] == dense and report["projection_bits"] == 600 * 784
    assert report["deployed_size_mb"] == pytest.approx((32 * dense + 600 * 784) / 8e6)
    assert count_macs(net, (1, 28, 28)) == 600 * 784 + 600 * 128 + 128 * 10


def test_projection_student_learns_under_kd_and_jointly() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    teacher = build_model({"name": "cnn_tiny"}, 10, 1)
    kd = build_method({"name": "kd"}, projection(), teacher, 10, (1, 28, 28), SGD, NO_SCHED)
    losses = train_steps(kd, x, y, 25)
    assert losses[-1] < 0.85 * losses[0]
    trainer = build_model({"name": "cnn_tiny"}, 10, 1)  # teacher=cnn_tiny: the trainer network
    joint = build_method({"name": "projection_joint"}, projection(), trainer, 10, (1, 28, 28), SGD, NO_SCHED)
    assert (joint.trainer_weight, joint.ce_weight, joint.kd_weight, joint.temperature) == (1.0, 1.0, 1.0, 1.0)
    before = [p.detach().clone() for p in joint.trainer_net.parameters()]
    losses = train_steps(joint, x, y, 25)
    assert losses[-1] < 0.85 * losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, joint.trainer_net.parameters()))  # trainer learns


def test_cli_bad_inputs_fail_before_any_teacher_work(kdexp_run, tmp_path) -> None:
    common = ("data=fake", "data.image_shape=[1,28,28]", "debug=fast", "logger=none", "method=kd")
    for i, overrides in enumerate(
        (
            ("student=projection", "+student.trained_input_shape=[1,32,32]"),
            ("student=cnn_tiny", "+student.quantize.weight_bits=3", "+student.quantize.activation_bits=8"),
        )
    ):
        outcome = kdexp_run(*common, *overrides, cache_dir=tmp_path / "cache", run_dir=tmp_path / f"run{i}")
        assert outcome.exit_code == 2, outcome.message
        assert "student." in outcome.message
        assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))
