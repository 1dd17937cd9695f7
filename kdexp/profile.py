"""Measure a model's cost — the same way for teacher and student.

What is measured, and in which units:

* ``params`` / ``trainable_params``: parameter counts (elements), shared parameters counted once.
* ``size_mb``: bytes of ``torch.save(model.state_dict())`` written to an in-memory buffer,
  divided by 10**6 (MB = 10^6 bytes, not MiB). Includes buffers (e.g. BatchNorm running stats)
  and a small pickle overhead.
* ``macs``: multiply-accumulates for ONE input (batch 1), counted with
  :class:`torch.utils.flop_counter.FlopCounterMode` as ``total_flops / 2``. The counter only
  knows the heavy aten ops — convolution, ``mm``/``addmm`` (``nn.Linear``),
  ``matmul``/``bmm``/``baddbmm`` and scaled-dot-product attention; elementwise ops (activations,
  BatchNorm in eval, additions, pooling, softmax) count as zero. This is the convention of
  published "FLOPs" tables that really mean MACs (torchvision's resnet18 "1.81 GFLOPS" = 1.81
  GMACs).
* ``latency_ms_b1`` / ``latency_iqr_ms_b1``: median and interquartile range of one forward pass at
  batch 1, in milliseconds, from :meth:`torch.utils.benchmark.Timer.blocked_autorange`.
* ``throughput_ips``: images per second at batch ``throughput_batch`` = batch / median time.

Timing runs the model in ``eval()`` under :func:`torch.inference_mode`, with the Timer's explicit
``num_threads`` (default: ``torch.get_num_threads()``), after up to 3 untimed warm-up forwards
(the Timer's own warm-up is a single call for a slow model); on CUDA the Timer synchronises the
device around each timed block. The Measurement's median and IQR are over *blocks* of runs; when
``blocked_autorange`` gives fewer than ``MIN_BLOCKS`` (7) blocks, the model is re-timed in 7 smaller
blocks, so the IQR always has blocks to spread over. Timings on a machine shared with other jobs are meaningless, and with
``threads`` > free cores they degrade badly (threads wait on descheduled siblings).

The caller's model is never modified: everything runs on a deep copy (mode, device,
``requires_grad`` flags, BatchNorm statistics and parameter storage of the original are
untouched). Forward hooks are copied along with the model, so a feature hook that stores outputs
in an outside dict will see the profiling forwards; profile before registering such hooks or after
removing them. If a model cannot be deep-copied (e.g. it keeps a non-leaf tensor as an attribute),
it is profiled in place and its per-module training flags and device are restored afterwards.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdexp.tools.files import locked, torch_bytes, write_json

if TYPE_CHECKING:
    from torch.utils.benchmark import Measurement


def _benchmark():
    """``torch.utils.benchmark``, imported when first timing: it imports cpp_extension, whose
    "No CUDA runtime is found" warning means nothing for timing a model on a CPU machine."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch.utils.benchmark as benchmark

    return benchmark

__all__ = [
    "ModelProfile",
    "count_params",
    "state_dict_size_mb",
    "count_macs",
    "measure_latency",
    "profile_model",
    "TimingStore",
    "timing_key",
]

# A latency whose IQR is more than this fraction of its median is flagged as noisy.
NOISY_IQR_RATIO = 0.25


@dataclass
class ModelProfile:
    """Cost of one model; units are part of the field names (see the module docstring)."""

    params: int  # all parameters (elements)
    trainable_params: int  # parameters with requires_grad=True
    size_mb: float  # bytes of torch.save(state_dict) / 1e6 (MB = 10^6 bytes)
    macs: int  # multiply-accumulates for ONE input (batch 1), conv/linear/matmul/bmm/attention only
    latency_ms_b1: float  # median forward time at batch 1, milliseconds
    latency_iqr_ms_b1: float  # interquartile range of that time, milliseconds
    throughput_ips: float  # images per second at batch `throughput_batch`
    throughput_batch: int
    device: str
    threads: int  # torch intra-op CPU threads used while timing
    timing: str = "measured"  # "measured" now, or "reused" from the timing store
    latency_noisy: bool = False  # IQR > NOISY_IQR_RATIO × median: do not trust small differences
    # With a timing store: its file and this timing's key there, so a report reads the store's
    # current entry (a later run may have replaced a noisy one) instead of this run's copy.
    timing_store: str | None = None
    timing_key: str | None = None

    def as_dict(self) -> dict[str, int | float | str]:
        """Flat, JSON-serialisable dict of plain Python ints, floats and strings (None left out)."""
        out: dict[str, int | float | str] = {}
        for key, value in asdict(self).items():
            if value is not None:
                out[key] = value if isinstance(value, (str, int)) else float(value)
        return out


# --------------------------------------------------------------------------------------------
# static costs


def count_params(model: nn.Module) -> tuple[int, int]:
    """Return ``(all parameters, trainable parameters)`` in elements; shared tensors count once."""
    total = trainable = 0
    for p in model.parameters():  # .parameters() already de-duplicates shared parameters
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable


def state_dict_size_mb(model: nn.Module) -> float:
    """Size of ``torch.save(model.state_dict())`` in MB (10^6 bytes), written to memory."""
    return len(torch_bytes(model.state_dict())) / 1e6


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates for ONE input of ``input_shape`` (no batch dim, e.g. ``(3, 32, 32)``).

    MACs = FlopCounterMode total flops / 2, for batch 1, model in eval mode on its current device.
    Counts conv, linear (``mm``/``addmm``), ``matmul``/``bmm`` and attention; not elementwise ops.
    The caller's model is not modified.
    """
    shape = _check_shape(input_shape)
    with _isolated(model, device=None) as m:
        return _count_macs(m, shape)


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: str | torch.device,
    threads: int,
    min_run_time: float,
) -> Measurement:
    """Time one forward pass of a ``(batch_size, *input_shape)`` random input.

    Uses ``Timer(num_threads=threads).blocked_autorange(min_run_time=min_run_time)`` (seconds) with
    the model in eval mode on ``device`` under ``torch.inference_mode()``, after a short untimed
    warm-up. The returned Measurement's ``median``/``iqr`` are seconds per forward pass (of the
    whole batch). The caller's model is not modified.
    """
    shape = _check_shape(input_shape)
    dev = _check_device(device)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("threads", threads)
    _check_min_run_time(min_run_time)
    with _isolated(model, device=dev) as m:
        return _measure(m, shape, batch_size, dev, threads, min_run_time)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timing_key(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device, threads: int, throughput_batch: int
) -> str:
    """What a timing depends on: the architecture (class and every tensor's name, shape and dtype;
    not the weights' values), the input shape, the device (and its model), the thread count, the
    batch of the throughput timing and the runtime (torch version). A 16-hex-digit hash."""
    tensors = [(name, tuple(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    identity = [type(model).__module__, type(model).__qualname__, tensors, list(input_shape), str(device.type),
                hardware, threads, throughput_batch, torch.__version__]
    return hashlib.sha256(json.dumps(identity, default=str).encode()).hexdigest()[:16]


class TimingStore:
    """Latency and throughput per :func:`timing_key`, in one JSON file shared by runs and sweeps
    (``<paths.cache_dir>/timings.json``): an architecture is timed once under given conditions and
    every later run reports that same measurement, so runs of one sweep cannot disagree about the
    same model. A noisy entry (IQR > ``NOISY_IQR_RATIO`` × median) is timed again and replaced by
    a steadier one. Updates hold a file lock and replace the file atomically. A profile names the
    store and its key (``timing_store``, ``timing_key`` in results.json), so ``kdexp-report`` shows
    the store's current entry for every run of that architecture."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.read().get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        with locked(self.path.with_suffix(".lock")):
            data = self.read()
            data[key] = entry
            write_json(self.path, data, indent=1, sort_keys=True)


def noisy(latency_ms: float, iqr_ms: float) -> bool:
    """Whether a latency's spread is too large to trust: IQR > NOISY_IQR_RATIO × median."""
    return iqr_ms > NOISY_IQR_RATIO * latency_ms


def profile_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: str | torch.device = "cpu",
    threads: int | None = None,
    throughput_batch: int = 64,
    min_run_time: float = 0.5,
    store: TimingStore | str | Path | None = None,
) -> ModelProfile:
    """Profile ``model`` for inputs of ``input_shape`` (no batch dim) on ``device``.

    ``threads`` defaults to ``torch.get_num_threads()``; ``min_run_time`` (seconds) is spent on each
    of the two timings (batch 1 and batch ``throughput_batch``). The caller's model is not modified.
    With a ``store`` (a :class:`TimingStore` or its file), the timings are taken from it when this
    architecture was timed under the same conditions before (and not noisily); else measured and
    kept there. Parameters, size and MACs are always counted.
    """
    if store is not None and not isinstance(store, TimingStore):
        store = TimingStore(store)
    shape = _check_shape(input_shape)
    dev = _check_device(device)
    n_threads = torch.get_num_threads() if threads is None else threads
    _check_positive_int("threads", n_threads)
    _check_positive_int("throughput_batch", throughput_batch)
    _check_min_run_time(min_run_time)

    params, trainable = count_params(model)
    size_mb = state_dict_size_mb(model)
    key = timing_key(model, shape, dev, n_threads, throughput_batch) if store is not None else ""
    stored = store.get(key) if store is not None else None
    reuse = stored is not None and not noisy(stored["latency_ms_b1"], stored["latency_iqr_ms_b1"])
    with _isolated(model, device=dev) as m:
        macs = _count_macs(m, shape)
        if reuse:
            timing = dict(stored)
        else:
            lat = _measure(m, shape, 1, dev, n_threads, min_run_time)
            thr = _measure(m, shape, throughput_batch, dev, n_threads, min_run_time)
            timing = {"latency_ms_b1": lat.median * 1e3, "latency_iqr_ms_b1": lat.iqr * 1e3,
                      "throughput_ips": throughput_batch / thr.median}
    if store is not None and not reuse:
        steadier = stored is None or timing["latency_iqr_ms_b1"] / timing["latency_ms_b1"] < (
            stored["latency_iqr_ms_b1"] / stored["latency_ms_b1"])
        if steadier:
            store.put(key, {**timing, "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": type(model).__name__})
        else:  # the stored one was noisy, this one more so: report the steadier
            timing, reuse = dict(stored), True
    return ModelProfile(
        params=params,
        trainable_params=trainable,
        size_mb=size_mb,
        macs=macs,
        latency_ms_b1=float(timing["latency_ms_b1"]),
        latency_iqr_ms_b1=float(timing["latency_iqr_ms_b1"]),
        throughput_ips=float(timing["throughput_ips"]),
        throughput_batch=throughput_batch,
        device=str(dev),
        threads=n_threads,
        timing="reused" if reuse else "measured",
        latency_noisy=noisy(float(timing["latency_ms_b1"]), float(timing["latency_iqr_ms_b1"])),
        timing_store=str(store.path.resolve()) if store is not None else None,
        timing_key=key or None,
    )


# --------------------------------------------------------------------------------------------
# internals


def _count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    x = _random_input(model, shape, 1, _model_device(model))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops()) // 2


MIN_BLOCKS = 7  # fewest timing blocks a median and IQR are computed from


def _measure(
    model: nn.Module,
    shape: tuple[int, ...],
    batch_size: int,
    device: torch.device,
    threads: int,
    min_run_time: float,
) -> Measurement:
    """Timer on an already isolated, eval-mode model that lives on ``device``."""
    x = _random_input(model, shape, batch_size, device)
    benchmark = _benchmark()
    timer = benchmark.Timer(
        stmt="model(x)",
        globals={"model": model, "x": x},
        num_threads=threads,
        label=type(model).__name__,
        sub_label=f"{tuple(x.shape)}",
        description=f"{device}, {threads} threads",
    )
    # The Python Timer runs `stmt` in this thread, so inference mode (thread-local) applies to it.
    # Its accelerator sync uses the *current* device; make that the one the model is on.
    cuda_ctx = torch.cuda.device(device) if device.type == "cuda" else nullcontext()
    with torch.inference_mode(), cuda_ctx:
        _warm_up(model, x, threads, min_run_time)
        m = timer.blocked_autorange(min_run_time=min_run_time)
        if len(m.times) < MIN_BLOCKS:  # too few blocks for a meaningful IQR: re-time in more, smaller ones
            number = max(1, int(min_run_time / (MIN_BLOCKS * m.median)))
            m = benchmark.Measurement.merge([timer.timeit(number) for _ in range(MIN_BLOCKS)])[0]
    if not (math.isfinite(m.median) and m.median > 0):
        name = type(model).__name__
        raise RuntimeError(f"timing {name} gave a non-positive median {m.median!r} s")
    return m


def _warm_up(
    model: nn.Module, x: torch.Tensor, threads: int, min_run_time: float, calls: int = 3
) -> None:
    """Untimed forwards on ``threads`` threads: ``calls`` of them, fewer after ``min_run_time`` s.

    The Timer's own warm-up is a single call for a slow model (its block-size estimate), while on
    CPU the first few forwards of a large model or batch (allocator, oneDNN primitives) can be many
    times slower than the steady state.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        for _ in range(calls):
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            if time.perf_counter() - start >= min_run_time:
                break
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _isolated(model: nn.Module, device: torch.device | None) -> Iterator[nn.Module]:
    """Yield an eval-mode version of ``model`` on ``device`` (None: where it is), safe to run.

    Normally a deep copy; if the model cannot be deep-copied, the model itself, with every module's
    ``training`` flag and the model's device restored on exit (``requires_grad`` is never touched).
    """
    try:
        clone = copy.deepcopy(model)
    except Exception:  # e.g. non-leaf tensors kept as attributes cannot be deep-copied
        clone = None
    if clone is not None:
        if device is not None:
            clone.to(device)
        yield clone.eval()
        return

    modes = [(mod, mod.training) for mod in model.modules()]
    original = _model_device(model)
    move = device is not None and device != original
    if move and len(_devices(model)) > 1:
        raise ValueError(
            f"cannot profile {type(model).__name__} on device={str(device)!r}: it cannot be "
            f"deep-copied and its tensors live on several devices "
            f"({sorted(map(str, _devices(model)))}),"
            " so it cannot be moved there and back; move it to one device first"
        )
    try:
        if move:
            model.to(device)
        yield model.eval()
    finally:
        if move:
            model.to(original)
        for mod, training in modes:
            mod.training = training


def _devices(model: nn.Module) -> set[torch.device]:
    return {t.device for t in chain(model.parameters(), model.buffers())}


def _model_device(model: nn.Module) -> torch.device:
    for t in chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def _random_input(
    model: nn.Module, shape: tuple[int, ...], batch_size: int, device: torch.device
) -> torch.Tensor:
    """Standard-normal input in the model's floating dtype (float32 if it has none)."""
    dtype = next(
        (t.dtype for t in chain(model.parameters(), model.buffers()) if t.is_floating_point()),
        torch.float32,
    )
    return torch.randn((batch_size, *shape), dtype=dtype, device=device)


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(
            f"input_shape={input_shape!r} is not a shape: give one input's shape WITHOUT the batch "
            "dimension, as a non-empty tuple of positive ints, e.g. (3, 32, 32) or (1, 28, 28)"
        )
    return shape


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu' or 'cuda[:N]'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} was requested but no CUDA GPU is available; "
                             "use device='cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"device={str(device)!r} is not supported; use 'cpu' or 'cuda[:N]'")
    return dev


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")


def _check_min_run_time(min_run_time: float) -> None:
    ok = isinstance(min_run_time, (int, float)) and math.isfinite(min_run_time)
    if not (ok and min_run_time > 0):
        raise ValueError(f"min_run_time={min_run_time!r} must be a positive number of seconds")
