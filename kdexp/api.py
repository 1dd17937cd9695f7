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

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@contextmanager
def hydra_context(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> Iterator[DictConfig]:
    """Compose ``train`` with ``overrides`` and make it resolvable as inside a Hydra run.

    Yields the job config (without the ``hydra`` node); ``${hydra:runtime.output_dir}`` is
    ``output_dir`` (default: the composed ``hydra.run.dir``, e.g. ``outputs/<date>/<time>``).
    Global Hydra state is restored on exit. ``overrides`` as one string is read as a command line
    (``"method=kd seed=1"``). Overrides Hydra cannot compose raise SetupError, with the keys a
    misspelt key's node accepts, as the CLI says them.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from kdexp.run.entry import register_resolvers

    overrides = as_overrides(overrides)
    register_resolvers()  # the resolvers configs/hydra names run folders with
    previous_hydra = HydraConfig.instance().cfg
    was_initialized = GlobalHydra.instance().is_initialized()
    saved = GlobalHydra.instance().hydra if was_initialized else None
    if was_initialized:
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR, job_name="kdexp"):
            cfg = _compose(compose, overrides)
            HydraConfig.instance().set_config(cfg)  # hydra.run.dir may use ${hydra:...} itself
            target = Path(output_dir) if output_dir is not None else Path(cfg.hydra.run.dir)
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                cfg.hydra.runtime.output_dir = str(target.resolve())
            HydraConfig.instance().set_config(cfg)
            job = copy.deepcopy(cfg)
            with read_write(job), open_dict(job):
                del job["hydra"]
            yield job
    except _NotComposed as failed:
        raise composition_error(failed.__cause__, overrides) from None
    finally:
        HydraConfig.instance().cfg = previous_hydra
        if was_initialized and saved is not None:
            GlobalHydra.instance().initialize(saved)


class _NotComposed(Exception):
    """Hydra could not compose the overrides (the cause); raised only by :func:`_compose`."""


def _compose(compose: Any, overrides: list[str]) -> DictConfig:
    from hydra.errors import HydraException

    try:
        return compose("train", overrides=overrides, return_hydra_config=True)
    except HydraException as err:  # a misspelt key or group option, an override Hydra cannot parse
        raise _NotComposed() from err


def as_overrides(overrides: str | Sequence[str]) -> list[str]:
    """A list of overrides; one string is read as a command line, so ``"method=kd"`` is one
    override, never one a character (a SetupError for anything but strings)."""
    import shlex

    from kdexp.errors import SetupError

    if isinstance(overrides, str):
        return shlex.split(overrides)
    overrides = list(overrides)
    wrong = [o for o in overrides if not isinstance(o, str)]
    if wrong:
        raise SetupError(f"overrides must be strings such as 'method=kd' (a list of them, or one string); got {wrong[0]!r}")
    return overrides


def composition_error(err: BaseException, overrides: list[str]) -> Exception:
    """What the CLI says when Hydra cannot compose ``overrides``: a misspelt key names the keys
    its node accepts (kdexp.checks.unknown_key_hint), anything else Hydra's own message."""
    from kdexp.checks import override_hint, unknown_key_hint
    from kdexp.errors import SetupError

    hint = override_hint(overrides) or unknown_key_hint(CONFIG_DIR, overrides)
    cause = f" ({err.__cause__})" if err.__cause__ is not None and str(err.__cause__) not in str(err) else ""
    return SetupError(hint or f"{err}{cause}")


def _record_config(job: DictConfig, overrides: Sequence[str]) -> None:
    """``<run>/.hydra/{config,overrides}.yaml``, as Hydra's launcher writes (kdexp-eval reads them)."""
    from hydra.core.hydra_config import HydraConfig

    folder = Path(HydraConfig.get().runtime.output_dir) / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(job, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / "overrides.yaml")


def run(overrides: str | Sequence[str] = (), output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run one experiment, as ``kdexp <overrides>`` does, and return its results dict.
    ``overrides``: a list (``["method=kd", "seed=1"]``) or one string read as a command line.

    ``output_dir``: the run folder (default ``outputs/<date>/<time>``); ``results.json``,
    ``student.pt``/``student.json`` and checkpoints go there. Bad input raises
    ``kdexp.errors.SetupError`` (a ValueError-like message naming the key) before any training.
    Multirun sweeps stay a CLI feature (``kdexp -m ...``), and so does the run-folder lock (a
    notebook may rerun into the same folder; a finished run's results are kept aside as usual).
    """
    from kdexp.run import record_run_failure
    from kdexp.run.entry import quiet_library_noise, run_checked

    quiet_library_noise()
    overrides = as_overrides(overrides)
    with hydra_context(overrides, output_dir) as job:
        _record_config(job, overrides)
        try:
            return run_checked(job)  # the kdexp command's checks and run (kdexp.run.entry)
        except BaseException as err:
            record_run_failure(job, err)
            raise


def load_student(run: str | Path, role: str = "student"):
    """The trained student of a run folder or ``.ckpt``, rebuilt, in eval mode (see kdexp.artifacts)."""
    from kdexp.artifacts import load_student as load

    return load(run, role)


def evaluate(run: str | Path, overrides: Sequence[str] = (), **options: Any) -> dict[str, Any]:
    """Evaluate a saved run on a test split; returns the results dict (see kdexp.evaluation)."""
    from kdexp.evaluation import evaluate_run

    return evaluate_run(run, overrides, **options)


def export(run: str | Path, format: str = "onnx", **options: Any) -> dict[str, Any]:  # noqa: A002
    """Export a run's student for deployment; returns the export record (see kdexp.exporting)."""
    from kdexp.exporting import export_run

    return export_run(run, format, **options)

