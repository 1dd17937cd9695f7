"""Low-precision students: bit-widths, distinct weight values, gradients, storage, int8, schemes."""

import pytest
import torch
from torch import nn

from kdexp.methods import build_method
from kdexp.methods.apprentice import ApprenticeFinetuneModule
from kdexp.models import build_model
from kdexp.quantize import QuantizedStudent, check_quantize_cfg
from conftest import train_steps

SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
NO_SCHED = {"name": "none"}


def quantized(name: str = "cnn_small", weight_bits: int = 4, activation_bits: int = 8):
    torch.manual_seed(0)
    cfg = {"name": name, "quantize": {"weight_bits": weight_bits, "activation_bits": activation_bits}}
    return build_model(cfg, 10, 1, (1, 28, 28))


def kd_module(student, **method):
    teacher = build_model({"name": "cnn_tiny"}, 10, 1)
    return build_method({"name": "kd", **method}, student, teacher, 10, (1, 28, 28), SGD, NO_SCHED)


@pytest.mark.parametrize(("bits", "levels"), [(2, 3), (4, 16)])
def test_quantised_weights_take_exactly_the_levels_after_training_and_gradients_flow(bits, levels) -> None:
    student = quantized(weight_bits=bits)
    module = kd_module(student)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    train_steps(module, x, y, 3, lr=0.05)
    seen: dict[str, torch.Tensor] = {}
    quantizers = student.module.weight_quantizers()
    hooks = [
        m.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.detach()))
        for name, m in quantizers.items()
    ]
    module.eval()
    student.module(x)
    for h in hooks:
        h.remove()
    assert len(seen) == 4  # three conv(+BN) layers and the classifier
    for name, weights in seen.items():
        scale = quantizers[name].scale.view(-1, *[1] * (weights.dim() - 1))  # one per output channel
        codes = weights / scale
        assert torch.allclose(codes, codes.round(), atol=1e-3)  # integer multiples of the scale
        distinct = codes.round().unique().numel()  # the integer levels of the whole tensor
        assert distinct <= levels, name
        if weights.numel() >= 1000:  # every level is used by a large tensor
            assert distinct == levels, (name, distinct)
        for channel in weights.flatten(1):  # and each channel holds at most that many values
            assert channel.unique().numel() <= levels
    for name, p in student.module.named_parameters():
        if name.endswith("weight") and p.dim() > 1:
            assert p.grad is not None and p.grad.abs().sum() > 0, name  # straight-through gradients


def test_eight_bit_weights_stay_within_256_levels_and_activations_are_quantised() -> None:
    student = quantized(weight_bits=8, activation_bits=4)
    student.module.eval()
    student.module(torch.randn(8, 1, 28, 28))
    for m in student.module.weight_quantizers().values():
        assert (m.quant_min, m.quant_max) == (-128, 127)
    activation = [m for n, m in student.module.model.named_modules() if n.startswith("activation_post_process") and hasattr(m, "quant_max")]
    assert activation and all((m.quant_min, m.quant_max) == (0, 15) for m in activation)


def test_quantised_student_learns_under_kd() -> None:
    module = kd_module(quantized("cnn_tiny", 4, 8))
    torch.manual_seed(1)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    losses = train_steps(module, x, y, 25, lr=0.05)
    assert losses[-1] < 0.85 * losses[0]


def test_storage_at_real_bit_width() -> None:
    student = quantized("cnn_tiny", 4, 8)
    plain = build_model({"name": "cnn_tiny"}, 10, 1).module
    weights = sum(m.weight.numel() for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    total = sum(p.numel() for p in plain.parameters())
    channels = sum(m.weight.shape[0] for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    report = student.module.memory_report()
    assert report["quantized_weight_elements"] == weights
    assert report["deployed_size_mb"] == pytest.approx((4 * weights + 32 * (channels + total - weights)) / 8e6)
    assert report["size_mb_float32"] == pytest.approx(total * 4 / 1e6)


def test_int8_model_is_real_integer_and_agrees_with_the_training_graph() -> None:
    student = quantized("cnn_small", 8, 8)
    module = kd_module(student)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    train_steps(module, x, y, 3, lr=0.05)
    student.module.eval()
    int8 = student.module.to_int8()
    kinds = {type(m).__module__ for m in int8.modules()}
    assert any("quantized" in k for k in kinds)  # quantized kernels, not fake quantisation
    with torch.no_grad():
        fake, real = student.module(x), int8(x)
    assert (fake.argmax(1) == real.argmax(1)).float().mean() >= 0.9
    loader = [(x[:32], y[:32]), (x[32:], y[32:])]
    datamodule = type("DM", (), {"test_dataloader": lambda self: loader})()
    report = student.module.integer_report(datamodule, {"min_run_time": 0.01, "threads": 1})
    expected = (real.argmax(1) == y).float().mean().item()
    assert report["int8_acc_top1"] == pytest.approx(expected)
    assert report["int8_latency_ms_b1"] > 0 and report["float32_latency_ms_b1"] > 0


def test_unsupported_bit_widths_are_named() -> None:
    with pytest.raises(ValueError, match=r"student.quantize.weight_bits=3 .*\[2, 4, 8\]"):
        check_quantize_cfg({"weight_bits": 3, "activation_bits": 8})
    with pytest.raises(ValueError, match=r"student.quantize.activation_bits=16 .*\[4, 8, 32\]"):
        check_quantize_cfg({"weight_bits": 4, "activation_bits": 16})
    with pytest.raises(ValueError, match=r"no option\(s\) \['bits'\]"):
        check_quantize_cfg({"bits": 4})


def test_scheme_a_trains_teacher_and_student_jointly() -> None:
    torch.manual_seed(0)
    student = quantized("cnn_tiny", 4, 8)
    teacher = build_model({"name": "cnn_tiny"}, 10, 1)  # teacher=cnn_tiny: the trainer network, trained jointly
    module = build_method({"name": "apprentice_joint"}, student, teacher, 10, (1, 28, 28), SGD, NO_SCHED)
    assert module.trainer_net is teacher.module and teacher.module.training
    assert (module.trainer_weight, module.ce_weight, module.kd_weight, module.temperature) == (1.0, 0.5, 0.5, 1.0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    module.train()
    assert module.trainer_net.training  # the teacher trains
    _, terms = module.training_losses(x, y)
    assert set(terms) == {"trainer_ce", "ce", "kd"}
    terms["kd"][1].backward()  # the distillation term reaches the student only
    assert all(p.grad is None for p in module.trainer_net.parameters())
    assert any(p.grad is not None for p in student.module.parameters())
    optimized = {id(p) for p in module.parameters() if p.requires_grad}  # what configure_optimizers takes
    assert all(id(p) in optimized for p in module.trainer_net.parameters())
    assert set(module.report_models()) == {"student", "teacher"}


def test_scheme_c_switches_quantisation_on_after_the_full_precision_epochs() -> None:
    student = quantized("cnn_small", 2, 32)
    q: QuantizedStudent = student.module
    x = torch.randn(4, 1, 28, 28)
    q.eval()
    q.set_quantization(False)
    seen = []
    quantizer = next(iter(q.weight_quantizers().values()))
    hook = quantizer.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    q(x)
    assert seen[-1][0].unique().numel() > 3  # full precision (first output channel)
    q.set_quantization(True)
    q(x)
    assert all(channel.unique().numel() <= 3 for channel in seen[-1].flatten(1))  # ternary
    hook.remove()
    with pytest.raises(ValueError, match="apprentice_finetune.*student.quantize.weight_bits"):
        ApprenticeFinetuneModule.check_models(build_model({"name": "cnn_tiny"}, 10, 1), None, {})


def test_cli_scheme_c_runs_end_to_end_and_reports_the_storage(kdexp_run, tmp_path) -> None:
    import json

    outcome = kdexp_run(
        "data=fake", "data.image_shape=[1,28,28]", "teacher=cnn_tiny", "student=cnn_tiny", "+student.quantize.weight_bits=4", "+student.quantize.activation_bits=8",
        "method=apprentice_finetune", "debug=fast", "trainer.max_epochs=2", "logger=none",
        cache_dir=tmp_path / "cache", run_dir=tmp_path / "run",
    )
    assert outcome.exit_code == 0, outcome.message
    student = json.loads((tmp_path / "run" / "results.json").read_text())["student"]
    assert student["weight_bits"] == 4 and student["deployed_size_mb"] < student["size_mb_float32"] / 4


def test_any_registered_architecture_with_residual_additions() -> None:
    student = quantized("resnet8", 2, 8)
    out = student.module(torch.randn(4, 1, 28, 28))
    out.logsumexp(1).mean().backward()
    assert out.shape == (4, 10) and len(student.module.weight_quantizers()) >= 7
    assert student.name == "resnet8-w2a8"


def test_untraceable_model_gets_a_clear_error() -> None:
    from kdexp.quantize import quantize_model

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.fc(x) if x.sum() > 0 else -self.fc(x)  # data-dependent: FX cannot trace it

    with pytest.raises(ValueError, match="student.quantize: Branchy cannot be prepared"):
        quantize_model(Branchy(), {"weight_bits": 4, "activation_bits": 8}, (4,))
