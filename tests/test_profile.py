"""Tests for kdexp.profile: exact counts, units, and that profiling leaves the model untouched.

No wall-clock assertions: timings are only checked to be positive and finite.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from kdexp.profile import (
    ModelProfile,
    count_macs,
    count_params,
    measure_latency,
    profile_model,
    state_dict_size_mb,
)

FAST = 0.05  # seconds of timing per measurement; keeps the file well under 30 s


def tiny_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(8 * 14 * 14, 10),
    )


# ---------------------------------------------------------------------------------------------
# params and size


def test_count_params_splits_trainable_and_counts_shared_once():
    shared = nn.Linear(4, 4)  # 20 params
    model = nn.Sequential(nn.Linear(3, 4), shared, shared)  # 16 + 20
    assert count_params(model) == (36, 36)
    model[0].requires_grad_(False)
    assert count_params(model) == (36, 20)


def test_state_dict_size_is_float32_bytes_over_1e6():
    model = nn.Linear(1000, 1000, bias=False)  # 1e6 float32 params = 4.0e6 bytes
    size = state_dict_size_mb(model)
    assert size >= 4.0
    assert size - 4.0 < 0.01  # pickle/zip overhead is a few KB


# ---------------------------------------------------------------------------------------------
# MACs


def test_macs_linear():
    assert count_macs(nn.Linear(784, 10), (784,)) == 784 * 10


def test_macs_conv():
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), (3, 32, 32)) == 8 * 32 * 32 * 3 * 3 * 3


def test_macs_sequential_adds_up_and_ignores_elementwise():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 32 * 32, 10),
    )
    expected = 8 * 32 * 32 * 3 * 3 * 3 + 8 * 32 * 32 * 10
    assert count_macs(model, (3, 32, 32)) == expected


def test_macs_are_per_image_not_per_batch_and_depthwise_conv_uses_groups():
    dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
    assert count_macs(dw, (16, 8, 8)) == 16 * 8 * 8 * 3 * 3


def test_macs_resnet18_matches_published():
    torchvision = pytest.importorskip("torchvision")
    macs = count_macs(torchvision.models.resnet18(weights=None), (3, 224, 224))
    assert abs(macs - 1.82e9) / 1.82e9 < 0.02


# ---------------------------------------------------------------------------------------------
# timing


def test_measure_latency_returns_measurement_in_seconds():
    m = measure_latency(tiny_cnn(), (1, 28, 28), batch_size=4, device="cpu", threads=1,
                        min_run_time=FAST)
    assert isinstance(m, torch.utils.benchmark.Measurement)
    assert math.isfinite(m.median) and m.median > 0
    assert m.iqr >= 0
    assert m.task_spec.num_threads == 1


def test_profile_model_fields_and_json():
    model = tiny_cnn()
    prof = profile_model(model, (1, 28, 28), threads=1, throughput_batch=8, min_run_time=FAST)
    assert isinstance(prof, ModelProfile)
    n = sum(p.numel() for p in model.parameters())
    assert prof.params == prof.trainable_params == n
    assert prof.macs == 8 * 28 * 28 * 9 + 8 * 14 * 14 * 10
    assert prof.size_mb > n * 4 / 1e6
    for value in (prof.latency_ms_b1, prof.throughput_ips):
        assert math.isfinite(value) and value > 0
    assert math.isfinite(prof.latency_iqr_ms_b1) and prof.latency_iqr_ms_b1 >= 0
    assert prof.throughput_batch == 8
    assert prof.device == "cpu"
    assert prof.threads == 1

    d = prof.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {
        "params", "trainable_params", "size_mb", "macs", "latency_ms_b1", "latency_iqr_ms_b1",
        "throughput_ips", "throughput_batch", "device", "threads", "timing", "latency_noisy",
    }
    assert all(isinstance(v, (int, float, str, bool)) for v in d.values())


def test_default_threads_and_thread_setting_restored():
    before = torch.get_num_threads()
    prof = profile_model(nn.Linear(8, 2), (8,), throughput_batch=4, min_run_time=FAST)
    assert prof.threads == before
    profile_model(nn.Linear(8, 2), (8,), threads=1, throughput_batch=4, min_run_time=FAST)
    assert torch.get_num_threads() == before


def test_forwards_run_in_eval_under_inference_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    record: list[tuple[bool, bool, bool]] = []
    # Hooks are deep-copied with the model but the function is shared, so `record` sees the copy's
    # forwards (which is also why a feature-storing hook sees profiling forwards: see profile.py).
    model.register_forward_pre_hook(
        lambda mod, args: record.append(
            (torch.is_inference_mode_enabled(), mod.training, torch.is_grad_enabled())
        )
    )
    profile_model(model, (4,), threads=1, throughput_batch=2, min_run_time=FAST)
    assert record, "profiling ran no forward"
    assert set(record) == {(True, False, False)}
    assert model.training


# ---------------------------------------------------------------------------------------------
# the caller's model comes out exactly as it went in


def _snapshot(model: nn.Module) -> dict:
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "param_ids": {name: id(p) for name, p in model.named_parameters()},
        "data_ptrs": {name: t.data_ptr() for name, t in model.state_dict().items()},
        "state": {name: t.clone() for name, t in model.state_dict().items()},
        "grads": {name: None if p.grad is None else p.grad.clone()
                  for name, p in model.named_parameters()},
        "devices": {t.device for t in model.state_dict().values()},
    }


def _assert_same(before: dict, after: dict) -> None:
    for key in ("training", "requires_grad", "param_ids", "data_ptrs", "devices"):
        assert before[key] == after[key], key
    for name, t in before["state"].items():
        assert torch.equal(t, after["state"][name]), name
    for name, g in before["grads"].items():
        h = after["grads"][name]
        assert (g is None and h is None) or torch.equal(g, h), name


def _model_mid_training() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = tiny_cnn()
    model[0].requires_grad_(False)  # a frozen layer
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.arange(4))
        loss.backward()
        opt.step()
    model[5].eval()  # mixed modes: one submodule already in eval inside a training model
    return model, opt


def test_profiling_a_model_being_trained_leaves_it_untouched():
    model, opt = _model_mid_training()
    before = _snapshot(model)
    profile_model(model, (1, 28, 28), threads=1, throughput_batch=4, min_run_time=FAST)
    count_macs(model, (1, 28, 28))
    measure_latency(model, (1, 28, 28), 2, "cpu", 1, FAST)
    _assert_same(before, _snapshot(model))
    assert model.training and not model[5].training
    # training carries on with the same parameter objects
    opt.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.arange(4)).backward()
    opt.step()


def test_eval_model_stays_eval():
    model = tiny_cnn().eval()
    profile_model(model, (1, 28, 28), threads=1, throughput_batch=2, min_run_time=FAST)
    assert not any(m.training for m in model.modules())


class _KeepsActivation(nn.Module):
    """Stores a non-leaf tensor, which makes ``copy.deepcopy`` fail."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
        self.last: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if torch.is_grad_enabled():
            self.last = out
        return out


def test_model_that_cannot_be_deepcopied_is_restored_in_place():
    import copy

    model = _KeepsActivation().train()
    model.body[2].requires_grad_(False)
    model(torch.randn(4, 6)).sum().backward()
    with pytest.raises(RuntimeError):
        copy.deepcopy(model)
    model.body[1].eval()  # mixed modes survive too
    before = _snapshot(model)
    prof = profile_model(model, (6,), threads=1, throughput_batch=2, min_run_time=FAST)
    assert prof.macs == 6 * 6 + 6 * 3
    _assert_same(before, _snapshot(model))
    assert model.training and model.body.training and not model.body[1].training


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("shape", [(), (0, 4), (-1,), 784, ("a",)])
def test_bad_input_shape_is_a_clear_error(shape):
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(nn.Linear(784, 10), shape)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"threads": 0}, "threads"), ({"throughput_batch": 0}, "throughput_batch"),
     ({"min_run_time": 0}, "min_run_time"), ({"device": "tpu"}, "device")],
)
def test_bad_arguments_are_clear_errors(kwargs, key):
    with pytest.raises(ValueError, match=key):
        profile_model(nn.Linear(4, 2), (4,), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        profile_model(nn.Linear(4, 2), (4,), device="cuda")


# ---------------------------------------------------------------------------------------------
# GPU (skipped without one)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_profile_on_cuda_leaves_cpu_model_on_cpu():
    model, _ = _model_mid_training()
    before = _snapshot(model)
    prof = profile_model(model, (1, 28, 28), device="cuda", throughput_batch=8, min_run_time=FAST)
    assert prof.device.startswith("cuda")
    assert prof.latency_ms_b1 > 0 and prof.throughput_ips > 0 and prof.latency_iqr_ms_b1 >= 0
    assert prof.macs == 8 * 28 * 28 * 9 + 8 * 14 * 14 * 10
    _assert_same(before, _snapshot(model))


def test_timing_store_measures_an_architecture_once_under_the_same_conditions(tmp_path) -> None:
    """Issue 17, finding 5: one model timed separately in every run gave 0.55-2.72 ms in one sweep."""
    from kdexp.profile import TimingStore, profile_model

    store = TimingStore(tmp_path / "timings.json")
    first, second = nn.Sequential(nn.Linear(8, 4)), nn.Sequential(nn.Linear(8, 4))  # same architecture
    a = profile_model(first, (8,), threads=1, throughput_batch=4, min_run_time=0.01, store=store)
    assert a.timing == "measured" and len(store.read()) == 1
    (key,) = store.read()
    # A steady entry (the one just measured may be noisy on a busy machine) is reused as it is.
    store.put(key, {"latency_ms_b1": 0.5, "latency_iqr_ms_b1": 0.01, "throughput_ips": 1234.0})
    b = profile_model(second, (8,), threads=1, throughput_batch=4, min_run_time=0.01, store=store)
    assert b.timing == "reused" and not b.latency_noisy
    assert (b.latency_ms_b1, b.latency_iqr_ms_b1, b.throughput_ips) == (0.5, 0.01, 1234.0)
    other = profile_model(nn.Sequential(nn.Linear(8, 5)), (8,), threads=1, throughput_batch=4, min_run_time=0.01,
                          store=store)
    assert other.timing == "measured" and len(store.read()) == 2  # another architecture: its own entry
    profile_model(first, (8,), threads=1, throughput_batch=8, min_run_time=0.01, store=store)
    assert len(store.read()) == 3  # other conditions (throughput batch): another entry


def test_a_timing_whose_spread_is_as_large_as_its_median_is_flagged(tmp_path) -> None:
    from kdexp.profile import TimingStore, noisy, profile_model, timing_key

    assert noisy(1.0, 1.0) and not noisy(1.0, 0.1)
    model = nn.Sequential(nn.Linear(8, 4))
    store = TimingStore(tmp_path / "timings.json")
    key = timing_key(model, (8,), torch.device("cpu"), 1, 4)
    store.put(key, {"latency_ms_b1": 1.0, "latency_iqr_ms_b1": 5.0, "throughput_ips": 1.0})  # hopelessly noisy
    prof = profile_model(model, (8,), threads=1, throughput_batch=4, min_run_time=0.01, store=store)
    assert prof.timing == "measured"  # a noisy entry is never reused ...
    assert store.get(key)["latency_iqr_ms_b1"] / store.get(key)["latency_ms_b1"] < 5.0  # ... and is replaced


def test_a_profile_names_its_timing_store_and_key(tmp_path) -> None:
    """A report reads the store's current entry for a run (issue: one latency per model), so the
    run's results name the store and the key of its timing; without a store, neither."""
    from kdexp.profile import TimingStore, profile_model

    store = TimingStore(tmp_path / "timings.json")
    stats = profile_model(nn.Sequential(nn.Linear(8, 4)), (8,), threads=1, throughput_batch=4, min_run_time=0.01,
                          store=store).as_dict()
    assert stats["timing_store"] == str((tmp_path / "timings.json").resolve())
    assert list(store.read()) == [stats["timing_key"]]
    plain = profile_model(nn.Sequential(nn.Linear(8, 4)), (8,), threads=1, throughput_batch=4, min_run_time=0.01).as_dict()
    assert "timing_store" not in plain and "timing_key" not in plain
