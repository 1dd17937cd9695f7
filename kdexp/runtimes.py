"""Latency where the model will run: eager PyTorch (kdexp.profile) and ONNX Runtime.

``profile.runtimes=[torch,onnxruntime]`` times each model in both. ONNX Runtime timings use the
model exported by ``torch.onnx`` (kdexp.exporting), a CPU session with ``intra_op_num_threads`` =
the threads PyTorch is timed with (``profile.threads``, default torch's current setting) and
``inter_op_num_threads=1``, random inputs of the same shapes, and the same
``torch.utils.benchmark.Timer.blocked_autorange`` statistics (median, IQR over blocks):

* ``latency_ms_b1_onnxruntime`` / ``latency_iqr_ms_b1_onnxruntime``: one image, milliseconds;
* ``throughput_ips_onnxruntime``: images/s at ``profile.throughput_batch``.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

RUNTIMES = ("torch", "onnxruntime")
MIN_OPSET = 18  # the torch.onnx (dynamo) exporter's native opsets start here
MIN_BLOCKS = 7  # fewest timing blocks a median and IQR are computed from (as kdexp.profile)


def check_runtimes(runtimes: Any) -> list[str]:
    """``profile.runtimes`` as a list, or a ValueError naming the allowed values."""
    values = [runtimes] if isinstance(runtimes, str) else list(runtimes or ["torch"])
    unknown = [r for r in values if r not in RUNTIMES]
    if unknown or not values:
        raise ValueError(f"profile.runtimes={values} has unknown runtime(s) {unknown}; allowed: {list(RUNTIMES)}")
    if "onnxruntime" in values:
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
        except ImportError:
            raise ImportError("profile.runtimes=[...,onnxruntime] needs `pip install kdexp[deploy]` (onnx, onnxruntime, onnxscript)") from None
    return values


def max_opset() -> int:
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int | None = None, metadata: dict[str, str] | None = None) -> int:
    """``torch.onnx.export`` (dynamo) with a dynamic batch dimension; returns the written opset.

    Raises ValueError when the exporter cannot produce ``opset`` (it would silently keep its own).
    """
    if opset is not None and not MIN_OPSET <= opset <= max_opset():
        raise ValueError(f"opset={opset} is not one torch.onnx can export; choose {MIN_OPSET} to {max_opset()}")
    for name in ("onnx_ir", "onnxscript"):  # their INFO lines (one per graph pass) are not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    example = (torch.zeros(2, *input_shape),)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            model, example, None, input_names=["input"], output_names=["logits"], opset_version=opset,
            dynamic_shapes=({0: batch},), verbose=False, optimize=True,
        )
    except Exception as err:  # an operator or opset the exporter refuses
        raise ValueError(f"torch.onnx could not export the model{f' at opset={opset}' if opset else ''}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    written = int(program.model.opset_imports.get("", 0))
    if opset is not None and written != opset:
        raise ValueError(
            f"opset={opset}: torch.onnx could not convert this model to it (it produced opset {written}); "
            f"choose opset={written} or leave opset unset"
        )
    for key, value in (metadata or {}).items():
        program.model.metadata_props[key] = value
    program.save(str(path))
    return written


def ort_session(path: str | Path, threads: int) -> Any:
    """A CPU ONNX Runtime session on ``threads`` intra-op threads (one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_session(session: Any, input_shape: tuple[int, ...], batch: int, min_run_time: float) -> Any:
    """Median/IQR seconds of one ``session.run`` on a random ``(batch, *input_shape)`` float32 input."""
    from torch.utils.benchmark import Measurement, Timer

    name = session.get_inputs()[0].name
    feed = {name: torch.randn(batch, *input_shape).numpy()}
    timer = Timer(stmt="session.run(None, feed)", globals={"session": session, "feed": feed}, label="onnxruntime")
    for _ in range(3):  # warm-up: allocations and kernel selection happen on the first runs
        session.run(None, feed)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    if len(m.times) < MIN_BLOCKS:
        number = max(1, int(min_run_time / (MIN_BLOCKS * m.median)))
        m = Measurement.merge([timer.timeit(number) for _ in range(MIN_BLOCKS)])[0]
    if not (math.isfinite(m.median) and m.median > 0):
        raise RuntimeError(f"timing the ONNX Runtime session gave a non-positive median {m.median!r} s")
    return m


def onnxruntime_profile(
    model: nn.Module, input_shape: tuple[int, ...], threads: int, throughput_batch: int, min_run_time: float
) -> dict[str, Any]:
    """Export ``model`` to ONNX in a temporary folder and time it in ONNX Runtime (see module notes)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(copy.deepcopy(model).cpu().eval(), tuple(input_shape), path)  # the caller's model stays put
        session = ort_session(path, threads)
        lat = time_session(session, tuple(input_shape), 1, min_run_time)
        thr = time_session(session, tuple(input_shape), throughput_batch, min_run_time)
    return {
        "latency_ms_b1_onnxruntime": lat.median * 1e3,
        "latency_iqr_ms_b1_onnxruntime": lat.iqr * 1e3,
        "throughput_ips_onnxruntime": throughput_batch / thr.median,
        "threads_onnxruntime": threads,
    }


def profile_runtimes(model: nn.Module, input_shape: tuple[int, ...], profile: Any, device: Any, store: Any = None) -> dict[str, Any]:
    """kdexp.profile's numbers (``torch``; ``store``: its timing store) and, if asked, ONNX Runtime's: one flat dict."""
    from kdexp.profile import profile_model

    runtimes = check_runtimes(profile.get("runtimes", ["torch"]))
    threads = profile.get("threads") or torch.get_num_threads()
    out: dict[str, Any] = profile_model(
        model,
        tuple(input_shape),
        device=device,
        threads=threads,
        throughput_batch=profile.throughput_batch,
        min_run_time=profile.min_run_time,
        store=store,
    ).as_dict()
    if "onnxruntime" in runtimes:
        out.update(onnxruntime_profile(model, tuple(input_shape), threads, profile.throughput_batch, profile.min_run_time))
    return out
