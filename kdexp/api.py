"""The Python API for notebooks and scripts: the CLI's steps as functions.

    import kdexp
    results = kdexp.run(["data=fake", "trainer.max_epochs=1"], output_dir="outputs/nb/1")
    student = kdexp.load_student("outputs/nb/1")
    table = kdexp.evaluate("outputs/nb/1")
    onnx = kdexp.export("outputs/nb/1", format="onnx")

``run`` composes the same config as ``kdexp <overrides>`` (Hydra's compose API over the
repository's ``configs/``), sets up what Hydra's own launcher would (the run folder, its
``.hydra/`` record, ``HydraConfig`` for ``${hydra:...}`` interpolations) and runs it in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _record_config(job: DictConfig, overrides: Sequence[str]) -> None:
    """``<run>/.hydra/{config,overrides,hydra}.yaml``, as Hydra's launcher writes (kdexp-eval reads
    them: the overrides, and the user's config folders among hydra.runtime.config_sources)."""
    from hydra.core.hydra_config import HydraConfig

    from kdexp.tools.files import write_atomic

    folder = Path(HydraConfig.get().runtime.output_dir) / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "config.yaml", OmegaConf.to_yaml(job))
    write_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    write_atomic(folder / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": HydraConfig.get()})))


def run(
    overrides: str | Sequence[str] = (), output_dir: str | Path | None = None,
    config_dir: str | Path | Sequence[str | Path] | None = None,
) -> dict[str, Any]:
    """Run one experiment, as ``kdexp <overrides>`` does, and return its results dict.
    ``overrides``: a list (``["method=kd", "seed=1"]``) or one string read as a command line.
    ``config_dir``: a folder of your own configs (or several), as ``kdexp --config-dir`` adds it
    (docs/your_own.md).

    ``output_dir``: the run folder (default ``outputs/<date>/<time>``); ``results.json``,
    ``student.pt``/``student.json`` and checkpoints go there. Bad input raises
    ``kdexp.errors.SetupError`` (a ValueError-like message naming the key) before any training.
    Multirun sweeps stay a CLI feature (``kdexp -m ...``), and so does the run-folder lock (a
    notebook may rerun into the same folder; a finished run's results are kept aside as usual).
    """
    from kdexp.runner.folder import record_run_failure
    from kdexp.console import quiet_library_noise
    from kdexp.runner.entry import run_checked
    from kdexp.tools.config import as_overrides, compose_context

    quiet_library_noise()
    overrides = as_overrides(overrides)
    dirs = [config_dir] if isinstance(config_dir, (str, Path)) else list(config_dir or ())
    with compose_context(overrides, output_dir, config_dirs=dirs) as job:
        _record_config(job, overrides)
        try:
            return run_checked(job)  # the kdexp command's checks and run (kdexp.runner.entry)
        except BaseException as err:
            record_run_failure(job, err)
            raise


def load_student(run: str | Path, role: str = "student"):
    """The trained student of a run folder or ``.ckpt``, rebuilt, in eval mode (see kdexp.saved.load)."""
    from kdexp.saved.load import load_student as load

    return load(run, role)


def evaluate(run: str | Path, overrides: Sequence[str] = (), **options: Any) -> dict[str, Any]:
    """Evaluate a saved run on a test split; returns the results dict (see kdexp.evaluation)."""
    from kdexp.saved.evaluate import evaluate_run

    return evaluate_run(run, overrides, **options)


def export(run: str | Path, format: str = "onnx", **options: Any) -> dict[str, Any]:  # noqa: A002
    """Export a run's student for deployment; returns the export record (see kdexp.exporting)."""
    from kdexp.saved.export import export_run

    return export_run(run, format, **options)

