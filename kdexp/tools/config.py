"""Config: where configs/ is, the resolvers it names folders with, sweep-job names, and composing
``train`` with overrides as the ``kdexp`` command would (:func:`compose_context`).

Torch-free: ``kdexp --help`` and ``--cfg job`` import this module.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# kdexp's configs, found through the package: kdexp/configs (package data in a wheel; in a checkout,
# a link to the repository's configs/). Absolute: Hydra would read a relative path as a module.
CONFIG_DIR = str(Path(str(importlib.resources.files("kdexp") / "configs")).absolute())
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")  # Hydra's flag: a folder of the user's configs beside kdexp's
SWEPT_ENV = "KDEXP_SWEPT_KEYS"
MAX_DIRNAME = 120  # characters of a job folder's name (file systems allow 255 bytes)


# The user's config folders (``kdexp --config-dir``, ``kdexp.run(config_dir=)``): on the search path
# after kdexp's configs and before the kdexp-models source, whose catch-all ``student=<any name>``
# would otherwise hide a user's ``student/<name>.yaml`` (hydra_plugins.kdexp_models reads this).
_USER_DIRS: list[str] = []


def user_config_dirs() -> list[str]:
    """The user's config folders on this process's search path (absolute paths)."""
    return list(_USER_DIRS)


@contextmanager
def user_configs(dirs: Sequence[str | Path]) -> Iterator[list[str]]:
    """Put ``dirs`` on the search path of what is composed inside (a SetupError for a folder that
    is not there, naming it)."""
    found = checked_config_dirs(dirs)
    previous = list(_USER_DIRS)
    _USER_DIRS[:] = found
    try:
        yield found
    finally:
        _USER_DIRS[:] = previous


def checked_config_dirs(dirs: Sequence[str | Path]) -> list[str]:
    """``dirs`` as absolute paths; a SetupError naming the first that is not a folder."""
    from kdexp.errors import SetupError

    found = [str(Path(d).expanduser().absolute()) for d in dirs]
    missing = [d for d in found if not Path(d).is_dir()]
    if missing:
        raise SetupError(
            f"--config-dir {missing[0]}: no such folder. It names a folder of your own configs "
            "(<dir>/student/<name>.yaml, <dir>/data/<name>.yaml, <dir>/experiment/<name>.yaml, ...; docs/your_own.md)"
        )
    return found


def take_config_dirs(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the folders of ``--config-dir DIR`` / ``-cd DIR`` / ``--config-dir=DIR``, the other
    arguments): kdexp places them itself (:data:`_USER_DIRS`), where Hydra would put them after the
    kdexp-models source."""
    dirs, rest, args = [], [], iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            value = value if eq else next(args, "")
            dirs.append(value)
        else:
            rest.append(arg)
    return dirs, rest


def plain(cfg: DictConfig | dict | None) -> dict[str, Any]:
    """A resolved, plain-dict copy of a config node (what modules and checkpoints may hold)."""
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def _slurm_job_dir(fallback: str) -> str:
    from kdexp.distributed import slurm_job_dir  # imports torch: only when a run folder is named

    return slurm_job_dir(fallback)


def register_resolvers() -> None:
    """The resolvers configs/hydra names run and sweep folders with (before anything composes)."""
    OmegaConf.register_new_resolver("kdexp_dirname", job_dirname, replace=True)
    OmegaConf.register_new_resolver("kdexp_jobname", job_name, replace=True)
    if not OmegaConf.has_resolver("kdexp.slurm_job_dir"):
        OmegaConf.register_new_resolver("kdexp.slurm_job_dir", _slurm_job_dir, use_cache=True)
    if not OmegaConf.has_resolver("kdexp.pid"):  # unique default run folders (same-second runs)
        OmegaConf.register_new_resolver("kdexp.pid", lambda: str(os.getpid()), use_cache=True)


def job_dirname(overrides: str) -> str:
    """A sweep job's folder name: its overrides (``method=kd,seed=1``), shortened with a hash
    when they are too long for a file name. Registered as the ``kdexp_dirname`` resolver."""
    overrides = overrides.replace("/", "_")
    if len(overrides) <= MAX_DIRNAME:
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return f"{overrides[: MAX_DIRNAME - 9]}~{digest}"


def swept_keys(argv: list[str] | None = None) -> set[str]:
    """The keys a ``kdexp -m`` command line sweeps (``method=vanilla,kd``, ``seed=range(3)``), read
    with Hydra's own override parser; empty when none (e.g. an Optuna search's own parameters)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 - naming a folder must never stop a sweep; Hydra reports bad syntax
        return set()
    return {o.get_key_element().lstrip("+~") for o in overrides if o.is_sweep_override()}


def searched_keys(params: Any = None) -> set[str]:
    """The keys the sweeper's own ``hydra.sweeper.params`` sweep or search (an Optuna search's
    ``method.temperature: interval(1.0, 10.0)``); ``params`` None: the running job's Hydra config."""
    if params is None:
        from hydra.core.hydra_config import HydraConfig

        params = HydraConfig.get().sweeper.get("params") if HydraConfig.initialized() else None
    return swept_keys([f"{key}={value}" for key, value in (params or {}).items()])


def job_name(task_overrides: Any, argv: list[str] | None = None, params: Any = None) -> str:
    """A sweep job's folder (and TensorBoard run) name from the keys the sweep varies only:
    ``method=kd,seed=0``, or the values an Optuna trial searched (``hydra.sweeper.params``); the
    constant overrides stay in the job's ``.hydra/overrides.yaml`` and the report's caption. All
    overrides when nothing is swept. Registered as the ``kdexp_jobname`` resolver (its argument:
    ``${hydra.overrides.task}``); ``argv``, ``params``: the command line and the sweeper's params
    (default: this process's, and the job's Hydra config)."""
    items = [str(item) for item in task_overrides]
    noted = os.environ.get(SWEPT_ENV) if argv is None else None  # jobs on a cluster: see SweepReport
    swept = set(filter(None, noted.split(","))) if noted is not None else swept_keys(argv)
    swept |= searched_keys(params) if params is not None or argv is None else set()
    chosen = [i for i in items if i.split("=", 1)[0].lstrip("+~") in swept] if swept else items
    return job_dirname(",".join(sorted(chosen or items)))


@contextmanager
def compose_context(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, config_dirs: Sequence[str | Path] = ()
) -> Iterator[DictConfig]:
    """Compose ``train`` with ``overrides`` and make it resolvable as inside a Hydra run.
    ``config_dirs``: folders of the user's own configs, as ``kdexp --config-dir`` adds them.

    Yields the job config (without the ``hydra`` node); ``${hydra:runtime.output_dir}`` is
    ``output_dir`` (default: the composed ``hydra.run.dir``, e.g. ``outputs/<date>/<time>``).
    Global Hydra state is restored on exit. ``overrides`` as one string is read as a command line
    (``"method=kd seed=1"``). Overrides Hydra cannot compose raise SetupError, with the keys a
    misspelt key's node accepts, as the CLI says them.
    """
    overrides = as_overrides(overrides)
    register_resolvers()  # the resolvers configs/hydra names run folders with
    with user_configs(config_dirs):
        with _composed(overrides, output_dir) as job:
            yield job


@contextmanager
def _composed(overrides: list[str], output_dir: str | Path | None) -> Iterator[DictConfig]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

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
    from kdexp.errors import SetupError

    hint = override_hint(overrides) or unknown_key_hint(CONFIG_DIR, overrides)
    cause = f" ({err.__cause__})" if err.__cause__ is not None and str(err.__cause__) not in str(err) else ""
    return SetupError(hint or f"{err}{cause}")


# --- command-line overrides that Hydra's grammar rejects --------------------------------------------
PATH_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "ckpt_path", "init_weights", "teacher.checkpoint")
PATH_SUFFIXES = ("_dir", ".root", "_path", ".checkpoint", ".dir")


def is_path_key(key: str) -> bool:
    key = key.lstrip("+~")
    return key in PATH_KEYS or key.startswith("paths.") or key.endswith(PATH_SUFFIXES)


def override_hint(argv: list[str]) -> str | None:
    """A one-paragraph hint when a path-valued override would fail in Hydra's override lexer (a
    ``~``, a non-ASCII character, a space the shell split on), or None."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    previous = None
    for arg in (a for a in argv if not a.startswith("-")):
        key, sep, value = arg.partition("=")
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as err:
            if sep and is_path_key(key):
                tilde = " (`~` is not expanded in a config value: write the full path)" if "~" in value else ""
                quoted = value.replace("~", os.path.expanduser("~"), 1) if value.startswith("~") else value
                return (
                    f"{key}={value!r}: Hydra's override grammar cannot read this path unquoted "
                    f"({str(err).splitlines()[0]}). Quote the value inside the argument, e.g. "
                    f"'{key}=\"{quoted}\"'{tilde}"
                )
            if not sep and previous is not None:
                pkey, _, pvalue = previous.partition("=")
                return (
                    f"{pkey}={pvalue!r} was followed by {arg!r}: a path with spaces was split by the shell. "
                    f"Quote the whole override, e.g. '{pkey}=\"{pvalue} {arg}\"'"
                )
            return None  # not a path: Hydra's own message is the right one
        previous = arg if sep and is_path_key(key) else None
    return None


def unknown_key_hint(config_dir: str, overrides: list[str]) -> str | None:
    """Why Hydra refused to compose ``overrides``, when the reason is a key the config does not
    have (``optimizer.betas=...`` with SGD): that key and the ones its node accepts; else None.

    Called only after Hydra has failed, so a good command line never pays for a second compose."""
    import re

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    plain = [o for o in overrides if "=" in o and not o.startswith(("hydra.", "-"))]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            try:
                compose("train", overrides=plain)
                return None
            except ConfigCompositionException as err:
                found = re.search(r"Could not override '([^']+)'", str(err))
                if not found or "not in struct" not in str(err.__cause__ or err):
                    return None
                key = found.group(1)
                others = [o for o in plain if not o.startswith((f"{key}=", "+"))]
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(compose("train", overrides=others), parent) if parent else None
    except Exception:  # noqa: BLE001 - a diagnosis must never hide Hydra's own message
        return None
    finally:
        GlobalHydra.instance().clear()
    if not isinstance(node, DictConfig):
        return None
    owner = f"{parent} {node.name!r}" if "name" in node else parent
    accepted = ", ".join(k for k in node if k != "name")
    return (
        f"{key}: {owner} has no option {leaf!r}; it accepts: {accepted}. (A key added with "
        f"+{key}=... is checked against what the {parent} accepts when the run starts.)"
    )


def with_override_hints(main: Any, config_dir: str | None = None) -> Any:
    """Wrap the Hydra entry point: a path override Hydra cannot parse ends with a hint (exit 2),
    and so does an override of a key the config does not have (Hydra's own exit would be 1); a
    reader that closes the pipe early (``kdexp --help | head -1``) ends it quietly."""
    import functools
    import sys

    from kdexp.errors import SetupError, exit_status, exit_with

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        hint = override_hint(sys.argv[1:])
        if hint:
            exit_with(SetupError(hint))
        dirs, sys.argv[1:] = take_config_dirs(sys.argv[1:])  # --config-dir: placed by kdexp (_USER_DIRS)
        try:
            checked_config_dirs(dirs)
        except SetupError as err:
            exit_with(err)
        try:
            with user_configs(dirs):
                return main(*args, **kwargs)
        except BrokenPipeError:  # `kdexp --help | head -1`: the reader has all it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
            exit_status(141)  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
        except SystemExit as stop:
            with user_configs(dirs):
                hint = unknown_key_hint(config_dir, sys.argv[1:]) if stop.code == 1 and config_dir else None
            if hint:
                exit_with(SetupError(hint))
            raise

    return wrapped
