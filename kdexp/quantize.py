"""Low-precision students (Mishra & Marr 2018, "Apprentice"): quantisation-aware training of any
registered architecture with PyTorch's ``torch.ao`` fake quantisation (FX graph mode).

``student.quantize: {weight_bits, activation_bits}``:

* weights: ``weight_bits`` ∈ {2 (ternary), 4, 8}, symmetric with one scale per output channel,
  integer levels q ∈ [−2^(b−1), 2^(b−1) − 1] (ternary: q ∈ {−1, 0, 1}), w_q = scale_c · q with
  scale_c = max|w_c| / ((q_max − q_min) / 2) tracked by a moving-average min/max observer. Per
  channel, not per tensor: with conv+BN folding, a per-tensor ternary scale zeroes whole weak
  channels, whose batch variance then falls to ~0, whose folded weights grow as 1/√var, which
  raises the shared scale further — it diverged to NaN within 100 steps on Fashion-MNIST;
* activations: ``activation_bits`` ∈ {4, 8} quantised after every quantisable op (unsigned,
  affine, q ∈ [0, 2^b − 1]); 32 keeps them in float32;
* gradients pass the rounding by the straight-through estimator of ``torch.ao``'s FakeQuantize.

``prepare_qat_fx`` fuses conv+BN(+ReLU) as for deployment, so BN is folded into the quantised
weights. Why ``torch.ao`` and not Brevitas: it is already installed with torch (no new
dependency), its FakeQuantize takes any integer range (ternary, 4 and 8 bits), its FX graph mode
handles any traceable architecture (residual additions included) without model edits, and the same
graph converts to a real int8 model for the x86 backend, whose latency and accuracy we report.
It prints a deprecation notice pointing to ``torchao``, whose QAT targets transformer linear
layers rather than these CNNs; docs/students.md says more.

Cost reported (``memory_report``): storage at the real bit-width, Σ bits × quantised weight
elements + 32 × (one scale per output channel + the other parameters), beside the float32 size. For 8-bit weights and
activations, ``integer_report`` converts a copy with ``convert_fx`` (x86 backend) and measures
the int8 model's test accuracy and CPU latency beside the float32 architecture's.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

WEIGHT_BITS = (2, 4, 8)
ACTIVATION_BITS = (4, 8, 32)
_KEYS = ("weight_bits", "activation_bits")


def check_quantize_cfg(cfg: dict[str, Any]) -> dict[str, int]:
    """``student.quantize`` with both bit-widths, or a ValueError naming the key and the choices."""
    if not isinstance(cfg, dict):
        raise ValueError(f"student.quantize must be a mapping {{weight_bits, activation_bits}}, got {cfg!r}")
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise ValueError(f"student.quantize has no option(s) {unknown}; allowed: {list(_KEYS)}")
    out = {"weight_bits": cfg.get("weight_bits", 8), "activation_bits": cfg.get("activation_bits", 8)}
    for key, allowed in (("weight_bits", WEIGHT_BITS), ("activation_bits", ACTIVATION_BITS)):
        if isinstance(out[key], bool) or out[key] not in allowed:
            what = "2 = ternary" if key == "weight_bits" else "32 = full precision"
            raise ValueError(
                f"student.quantize.{key}={out[key]!r} is not supported by kdexp's torch.ao fake "
                f"quantisation; choose one of {list(allowed)} ({what})"
            )
    return out


def weight_levels(bits: int) -> tuple[int, int]:
    """(q_min, q_max) of the signed integer weight levels; 2 bits = ternary {−1, 0, 1}."""
    return (-1, 1) if bits == 2 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def qat_config(weight_bits: int, activation_bits: int) -> Any:
    """The ``torch.ao`` QConfig: per-channel symmetric weights, per-tensor affine activations."""
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PlaceholderObserver,
        QConfig,
    )

    low, high = weight_levels(weight_bits)
    weight = FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver,
        quant_min=low,
        quant_max=high,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )
    if activation_bits == 32:
        activation = PlaceholderObserver.with_args(dtype=torch.float)
    else:
        activation = FakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver,
            quant_min=0,
            quant_max=2**activation_bits - 1,
            dtype=torch.quint8,
            qscheme=torch.per_tensor_affine,
        )
    return QConfig(activation=activation, weight=weight)


class QuantizedStudent(nn.Module):
    """A model prepared for quantisation-aware training (``self.model``, an FX GraphModule)."""

    def __init__(self, model: nn.Module, weight_bits: int, activation_bits: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        from torch.ao.quantization import QConfigMapping
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        self.input_shape = tuple(input_shape)
        # The float32 architecture (untrained), for the latency that the int8 model stands beside.
        self._float_reference = [copy.deepcopy(model).eval()]
        mapping = QConfigMapping().set_global(qat_config(weight_bits, activation_bits))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
            self.model = prepare_qat_fx(model.train(), mapping, example_inputs=(torch.zeros(2, *input_shape),))

    def train(self, mode: bool = True) -> QuantizedStudent:
        """The observers track value ranges in training mode only: torch.ao's FakeQuantize would
        otherwise keep moving its scales on validation and test images (the evaluated model would
        change as it is evaluated, and a saved student would differ from its checkpoint). A
        quantiser that never observed anything (a model not trained yet) observes its first batch."""
        from torch.ao.quantization import FakeQuantizeBase

        super().train(mode)
        for m in self.model.modules():
            if isinstance(m, FakeQuantizeBase):
                low = m.activation_post_process.min_val
                calibrated = low.numel() > 0 and bool(torch.isfinite(low).all())
                m.enable_observer() if mode or not calibrated else m.disable_observer()
        return self

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_inference_mode_enabled():
            return self.model(x)
        # Under inference mode (kdexp.profile), with the weights' requires_grad flags off for the
        # call: the FX graph passes parameters into modules (the weight FakeQuantize), which
        # torch.utils.flop_counter's module tracker cannot handle under inference mode otherwise.
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            return self.model(x)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    def weight_quantizers(self) -> dict[str, nn.Module]:
        """Module path → the FakeQuantize of a quantised weight."""
        return {name: m for name, m in self.model.named_modules() if name.endswith("weight_fake_quant")}

    def set_quantization(self, enabled: bool) -> None:
        """Switch fake quantisation on (QAT) or off (a full-precision student). The observers keep
        tracking value ranges either way, so quantisation starts calibrated (and no observer
        buffer is left at its initial ±inf)."""
        from torch.ao.quantization import disable_fake_quant, enable_fake_quant

        self.model.apply(enable_fake_quant if enabled else disable_fake_quant)

    def quantized_weight_elements(self) -> tuple[int, int]:
        """(elements of the weights stored at ``weight_bits``, their output channels = scales)."""
        owners = [self.model.get_submodule(name.rsplit(".", 1)[0]) for name in self.weight_quantizers()]
        return sum(o.weight.numel() for o in owners), sum(o.weight.shape[0] for o in owners)

    def memory_report(self) -> dict[str, Any]:
        """Storage at the real bit-width beside float32 (MB = 10^6 bytes)."""
        total = sum(p.numel() for p in self.model.parameters())
        quantized, scales = self.quantized_weight_elements()
        bits = self.weight_bits * quantized + 32 * (scales + total - quantized)
        return {
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "quantized_weight_elements": quantized,
            "deployed_size_mb": bits / 8 / 1e6,  # as stored at its bit-width (the run table and kdexp-report show it)
            "size_mb_float32": 32 * total / 8 / 1e6,
        }

    def quantization_card(self) -> dict[str, Any]:
        """What the model card says of it (``quantization``): the scheme, the bit-widths and how
        the saved weights hold them (float32 tensors, fake-quantised at run time)."""
        return {
            "scheme": "quantisation-aware training, torch.ao fake quantisation (FX graph mode)",
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "weights": "symmetric, one scale per output channel" + (" (ternary)" if self.weight_bits == 2 else ""),
            "activations": "float32" if self.activation_bits == 32 else "unsigned affine, one scale per tensor",
            "stored_as": "float32 weights with their observers' scales; rounded to the levels at run time",
            "deployed_size_mb": self.memory_report()["deployed_size_mb"],
        }

    def to_int8(self) -> nn.Module:
        """A real int8 model (``convert_fx``, x86 backend) of a copy; only for 8-bit weights and
        activations. Runs on the CPU."""
        from torch.ao.quantization.quantize_fx import convert_fx

        if (self.weight_bits, self.activation_bits) != (8, 8):
            raise ValueError("an int8 model needs student.quantize.weight_bits=8 and activation_bits=8")
        torch.backends.quantized.engine = "x86"
        prepared = copy.deepcopy(self.model).cpu().eval()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
            return convert_fx(prepared)

    def integer_report(self, datamodule: Any, profile_cfg: dict[str, Any]) -> dict[str, Any]:
        """For 8/8 students: the converted int8 model's test accuracy and CPU latency (batch 1)
        beside the float32 architecture's, timed the same way (kdexp.profile.measure_latency)."""
        if (self.weight_bits, self.activation_bits) != (8, 8):
            return {}
        from kdexp.profile import measure_latency

        int8 = self.to_int8()
        correct = total = 0
        with torch.no_grad():
            for x, y, *_ in datamodule.test_dataloader():
                correct += int((int8(x.cpu().float()).argmax(1) == y.cpu()).sum())
                total += len(y)
        threads = profile_cfg.get("threads") or torch.get_num_threads()
        timing = {"batch_size": 1, "device": "cpu", "threads": threads, "min_run_time": profile_cfg.get("min_run_time", 1.0)}
        int8_latency = measure_latency(int8, self.input_shape, **timing)
        float_latency = measure_latency(self._float_reference[0], self.input_shape, **timing)
        return {
            "int8_acc_top1": correct / max(total, 1),
            "int8_latency_ms_b1": int8_latency.median * 1e3,
            "float32_latency_ms_b1": float_latency.median * 1e3,
            "int8_speedup": float_latency.median / int8_latency.median,
        }


def quantize_model(model: nn.Module, cfg: dict[str, Any], input_shape: tuple[int, ...]) -> QuantizedStudent:
    """``model`` prepared for quantisation-aware training at ``cfg``'s bit-widths."""
    bits = check_quantize_cfg(cfg)
    if not math.prod(input_shape):
        raise ValueError(f"input_shape {input_shape} is empty")
    try:
        return QuantizedStudent(model, bits["weight_bits"], bits["activation_bits"], input_shape)
    except Exception as err:  # torch.fx cannot trace data-dependent control flow, for one
        raise ValueError(
            f"student.quantize: {type(model).__name__} cannot be prepared for quantisation-aware "
            f"training by torch.ao's FX graph mode ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "choose another student architecture or drop student.quantize"
        ) from None
