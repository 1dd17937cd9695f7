"""kdexp-export's work: a finished run's student exported (ONNX, TorchScript, safetensors),
checked against PyTorch on test images, written only once the check passes and recorded in
``<run>/exports.json``; the command line is kdexp.exporting (its help says more)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdexp.errors import KdexpError
from kdexp.runtimes import export_onnx

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}
TOLERANCE = {"onnx": (1e-4, 1e-3), "torchscript": (1e-4, 1e-3), "safetensors": (0.0, 0.0)}  # (atol, rtol)
EXPORTS_FILE = "exports.json"


class ExportCheckFailed(KdexpError):
    """The exported model's outputs differ from PyTorch's beyond the stated tolerance."""

    kind = "check failed"
    exit_code = 1


def export_torchscript(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    traced = torch.jit.trace(model, torch.zeros(2, *input_shape), check_trace=False)
    torch.jit.save(traced, str(path))


def export_safetensors(model: nn.Module, path: Path, card: dict[str, Any]) -> None:
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={"kdexp": json.dumps(card)})


def exported_runner(fmt: str, path: Path, card: dict[str, Any], threads: int) -> Callable[[torch.Tensor], np.ndarray]:
    """A function images → logits that runs the written file the way a deployment would."""
    if fmt == "onnx":
        from kdexp.runtimes import ort_session

        session = ort_session(path, threads)
        return lambda x: session.run(None, {"input": x.numpy()})[0]
    if fmt == "torchscript":
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
        return lambda x: scripted(x).numpy()
    from safetensors.torch import load_model

    from kdexp.models.card import build_from_card

    fresh = build_from_card(card).module.eval()
    # Not strict: a tensor shared under several names (a quantised student's observers) is stored
    # once, and its other names are "unexpected"; a missing one is an error, and the exact check follows.
    missing, _ = load_model(fresh, str(path), strict=False)
    if missing:
        raise ValueError(f"the file lacks {missing[:3]}")
    return lambda x: fresh(x).numpy()


@torch.inference_mode()
def check_outputs(
    model: nn.Module, run: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor, atol: float, rtol: float, batch: int = 64
) -> dict[str, Any]:
    """Compare exported vs eager logits on ``images``: max |diff|, the tolerance, top-1 agreement."""
    worst = worst_excess = 0.0
    agree = 0
    for start in range(0, len(images), batch):
        x = images[start : start + batch].contiguous()
        ref = model(x).numpy()
        out = np.asarray(run(x))
        diff = np.abs(out - ref)
        worst = max(worst, float(diff.max()))
        worst_excess = max(worst_excess, float((diff - (atol + rtol * np.abs(ref))).max()))
        agree += int((out.argmax(1) == ref.argmax(1)).sum())
    return {
        "images": int(len(images)),
        "max_abs_diff": worst,
        "atol": atol,
        "rtol": rtol,
        "rule": "|exported - eager| <= atol + rtol * |eager| for every logit",
        "top1_agreement": agree / max(len(images), 1),
        "passed": worst_excess <= 0.0,
    }


def check_format(fmt: str, card: dict[str, Any]) -> None:
    """Refuse, before anything is written, a format that cannot hold the model the card describes."""
    quantization = card.get("quantization")
    if fmt == "onnx" and quantization:
        raise ValueError(
            f"format=onnx cannot hold the quantised {card['role']} {card.get('name')!r} "
            f"({quantization.get('weight_bits')}-bit weights, {quantization.get('activation_bits')}-bit activations): "
            "torch.onnx cannot export torch.ao's fake quantisation; export format=torchscript (the same "
            "fake-quantised graph) or format=safetensors (its weights and quantisation scales)"
        )


def finished_run(run_dir: Path) -> dict[str, Any]:
    """results.json of a finished run, or a clear error (no folder, unfinished, no student)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        results = {}
    if not results.get("run", {}).get("complete"):
        state = "failed" if results.get("run", {}).get("status") == "failed" else "did not finish"
        raise ValueError(
            f"run folder {str(run_dir)!r} {state} (no complete results.json): there is no final student to "
            "export; resume it with ckpt_path=last, or export after it finishes"
        )
    return results


def test_images(run_dir: Path, count: int, overrides: Sequence[str] = ()) -> torch.Tensor:
    """The first ``count`` test images of the run's data (normalised as in training)."""
    from kdexp.saved.evaluate import load_config, test_datamodule

    datamodule = test_datamodule(load_config(run_dir, overrides))
    batches, seen = [], 0
    for x, *_ in datamodule.test_dataloader():
        batches.append(x.float().contiguous())
        seen += len(x)
        if seen >= count:
            break
    return torch.cat(batches)[:count].cpu()


def export_run(
    run: str | Path,
    format: str = "onnx",  # noqa: A002
    role: str = "student",
    opset: int | None = None,
    images: int = 256,
    threads: int | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Export ``role`` of a finished run to ``format``, check it, record it; returns the record."""
    from kdexp.saved.load import load_artifact
    from kdexp.tools.files import replace, write_json

    if format not in FORMATS:
        raise ValueError(f"format={format!r} is not supported; choose one of: {', '.join(FORMATS)}")
    if format == "onnx":
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ImportError("format=onnx needs `pip install kdexp[deploy]` (onnx, onnxruntime, onnxscript)") from None
    if opset is not None and format != "onnx":
        raise ValueError(f"opset= applies to format=onnx only, not format={format}")
    if int(images) < 1:
        raise ValueError(f"images={images} must be >= 1 (real test images the check runs on)")
    run_dir = Path(run)
    finished_run(run_dir)
    artifact = load_artifact(run_dir, role)
    model, card, shape = artifact.module.cpu().eval(), artifact.card, artifact.input_shape
    check_format(format, card)
    check_images = test_images(run_dir, int(images), overrides)
    folder = run_dir / "export"
    folder.mkdir(exist_ok=True)
    target = folder / f"{card['role']}{FORMATS[format]}"
    tmp = folder / f".{target.name}.{os.getpid()}.tmp{FORMATS[format]}"
    threads = threads or torch.get_num_threads()
    try:
        written_opset = None
        if format == "onnx":
            written_opset = export_onnx(model, shape, tmp, opset, {"kdexp": json.dumps(card)})
        elif format == "torchscript":
            export_torchscript(model, shape, tmp)
        else:
            export_safetensors(model, tmp, card)
        atol, rtol = TOLERANCE[format]
        try:
            runner = exported_runner(format, tmp, card, threads)
        except Exception as err:  # e.g. an opset newer than this ONNX Runtime knows
            where = f"opset {written_opset} in ONNX Runtime" if format == "onnx" else format
            raise ValueError(f"the exported {format} model cannot be loaded ({where}): {str(err).splitlines()[0]}; nothing was written") from None
        check = check_outputs(model, runner, check_images, atol, rtol)
        if not check["passed"]:
            raise ExportCheckFailed(
                f"the {format} export of {run_dir} differs from PyTorch by up to {check['max_abs_diff']:.3g} "
                f"on {check['images']} test images (allowed: atol={atol}, rtol={rtol}); nothing was written"
            )
        replace(tmp, target)
    finally:
        for leftover in folder.glob(f".{target.name}.{os.getpid()}.tmp*"):
            leftover.unlink()  # the exporter may write external data beside the file
    record = {
        "format": format,
        "file": str(target.relative_to(run_dir)),
        "size_bytes": target.stat().st_size,
        "size_mb": target.stat().st_size / 1e6,
        **({"opset": written_opset, "exporter": f"torch.onnx (torch {torch.__version__})"} if format == "onnx" else {}),
        "role": card["role"],
        "model": card.get("name"),
        "input_shape": card["input_shape"],
        "input_normalization": card.get("normalization"),
        "num_classes": card["num_classes"],
        "check": check,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    records_path = run_dir / EXPORTS_FILE
    try:
        records = json.loads(records_path.read_text())
    except (OSError, ValueError):
        records = {}
    records[f"{card['role']}.{format}"] = record
    write_json(records_path, records)
    return record
