"""``kdexp-eval``: evaluate a saved student (teacher, or cohort member) on a test split.

    kdexp-eval run=outputs/2026-01-01/12-00-00                 # the run's own test split
    kdexp-eval run=outputs/.../checkpoints/last.ckpt data=fake data.image_shape=[1,28,28]
    kdexp-eval run=<dir> role=student1 teacher=none profile.runtimes=[torch,onnxruntime]

``run=`` is a finished run folder (``<role>.json`` + weights) or a kdexp ``.ckpt``. The data
config is the run's own (its ``.hydra/overrides.yaml``) with the given overrides on top, so
``data=<other>`` evaluates on another dataset with the same classes. A step of a
class-incremental run (``run=<run>/step<k>``) is evaluated on its own data: the test images of the
classes seen up to step k, labelled by their position in the run's class order, as the step was.
Prints the run's teacher-vs-student table (accuracy, agreement, cost) and records it under
``<run>/evaluations/`` (never replacing a file).
"""

from __future__ import annotations

from collections.abc import Sequence

OWN_KEYS = ("run", "role", "teacher", "device")  # kdexp-eval's own arguments; the rest are overrides


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` arguments: kdexp-eval's own (``OWN_KEYS``) and Hydra overrides (the rest)."""
    own, overrides = {}, []
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"argument {arg!r} is not key=value; usage: kdexp-eval run=<run dir or .ckpt> [data=...] [role=student] [teacher=auto|none|required]")
        key, value = arg.split("=", 1)
        if key in OWN_KEYS:
            own[key] = value
        else:
            overrides.append(arg)
    if "run" not in own:
        raise ValueError("run= is required: a finished run folder or a kdexp .ckpt (kdexp-eval run=outputs/<date>/<time>)")
    return own, overrides


def _main(argv: list[str]) -> None:
    from kdexp.results import print_results
    from kdexp.saved.evaluate import evaluate_run

    own, overrides = parse_args(argv)
    options = {k: v for k, v in own.items() if k != "run"}
    results = evaluate_run(own["run"], overrides, **options)
    print_results(results)
    if "record" in results["run"]:
        print(f"Recorded in {results['run']['record']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``kdexp-eval``: its exit status (kdexp.errors.run_command)."""
    from kdexp.errors import run_command

    return run_command("kdexp-eval", _main, argv, help_text=__doc__)


if __name__ == "__main__":  # python -m <this module>, as the console script
    from kdexp.errors import exit_status

    exit_status(main())
