"""``kdexp-export``: write a finished run's student in a deployable format, checked against PyTorch.

    kdexp-export outputs/2026-01-01/12-00-00 format=onnx            # opset=<n>, images=<n>, role=...
    kdexp-export run=outputs/multirun/.../seed=1 format=torchscript    # run= as in kdexp-eval
    kdexp-export outputs/... format=safetensors

The run folder is ``run=<dir>`` or the one argument that is not ``key=value`` of a known key
(``format``, ``role``, ``opset``, ``images``, ``threads``) and names an existing path, so a sweep
job's folder (``.../method.kd_weight=0.5,seed=1``) is a run folder, not an option; other
``key=value`` arguments are data overrides for the check images (``data.root=...``).

Formats: ``onnx`` (``torch.onnx.export``, the maintained dynamo-based exporter, with a dynamic
batch dimension; run in ONNX Runtime for the check), ``torchscript`` (``torch.jit.trace``, run
after ``torch.jit.load``) and ``safetensors`` (the state_dict, with the model card as metadata;
loaded back into a freshly built model for the check).

The check: the exported model and the eager PyTorch model are run on the first ``images`` (256)
real test images of the run's data, and every logit must satisfy
``|exported − eager| <= atol + rtol * |eager|`` with atol = 1e-4, rtol = 1e-3 (float32 kernels sum
in different orders); safetensors must match exactly. The export is written to
``<run>/export/<role>.<ext>`` only after the check passes, and ``<run>/exports.json`` records
file, size, opset and the check per format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

OPTIONS = {"format": str, "role": str, "opset": int, "images": int, "threads": int}  # kdexp-export's own keys
USAGE = (
    "usage: kdexp-export <run dir> | run=<run dir> format=onnx|torchscript|safetensors [opset=N] "
    "[images=256] [role=student] [data overrides]"
)


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, Any], list[str]]:
    """(run folder, options, data overrides). Only the known keys (``run`` and ``OPTIONS``) are
    options; an argument naming an existing path, or without ``=``, is the run folder (a sweep
    job's folder name has ``=`` in it); any other ``key=value`` is a data override."""
    runs: list[str] = []
    options: dict[str, Any] = {}
    overrides = []
    for arg in argv:
        key, has_value, value = arg.partition("=")
        if key == "run" and has_value:
            runs.append(value)
        elif key in OPTIONS and has_value:
            try:
                options[key] = OPTIONS[key](value)
            except ValueError:
                raise ValueError(f"{key}={value!r} must be an integer; {USAGE}") from None
        elif not has_value or Path(arg).exists():
            runs.append(arg)
        else:  # data overrides for the check images, e.g. data.root=...
            overrides.append(arg)
    if len(runs) != 1:
        given = f" (got {', '.join(map(repr, runs))})" if runs else ""
        raise ValueError(f"give exactly one run folder{given}; {USAGE}")
    return runs[0], options, overrides


def _main(argv: list[str]) -> None:
    from kdexp.saved.export import EXPORTS_FILE, export_run

    run, options, overrides = parse_args(argv)
    record = export_run(run, overrides=overrides, **options)
    check = record["check"]
    print(
        f"Wrote {Path(run) / record['file']} ({record['size_mb']:.3f} MB"
        + (f", opset {record['opset']}" if "opset" in record else "")
        + f"); checked on {check['images']} test images: max |diff| {check['max_abs_diff']:.3g} "
        f"(atol {check['atol']}, rtol {check['rtol']}), top-1 agreement {100 * check['top1_agreement']:.2f}%. "
        f"Recorded in {Path(run) / EXPORTS_FILE}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``kdexp-export``: its exit status (kdexp.errors.run_command)."""
    from kdexp.errors import run_command

    return run_command("kdexp-export", _main, argv, help_text=__doc__)


if __name__ == "__main__":  # python -m <this module>, as the console script
    from kdexp.errors import exit_status

    exit_status(main())
