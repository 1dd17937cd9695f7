"""kdexp-eval's work: a saved student (teacher, or cohort member) evaluated on a test split, with
the run's own data config and the given overrides on top; the command line is kdexp.evaluation."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn



def run_folder(run: str | Path) -> Path | None:
    """The run folder of a run folder or of ``<run>/checkpoints/*.ckpt`` (None: a loose checkpoint)."""
    path = Path(run)
    if path.is_dir():
        return path
    parent = path.parent.parent
    return parent if (parent / ".hydra").is_dir() or incremental_step(parent) else None


def incremental_step(run_dir: Path | None) -> int | None:
    """k, where ``run_dir`` is step k's sub-run ``<run>/step<k>`` of a class-incremental run
    (its parent holds the run's config; step folders hold none)."""
    if run_dir is None or not (run_dir.parent / ".hydra").is_dir():
        return None
    found = re.fullmatch(r"step(\d+)", run_dir.name)
    config = run_dir.parent / ".hydra" / "config.yaml"
    if found is None or not config.is_file() or OmegaConf.load(config).get("incremental") is None:
        return None
    return int(found.group(1))


def config_folder(run_dir: Path | None) -> Path | None:
    """Where the run's ``.hydra/`` is: the run folder itself, or a step's parent run."""
    return run_dir.parent if incremental_step(run_dir) else run_dir


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def merged_overrides(run_dir: Path | None, overrides: Sequence[str]) -> list[str]:
    """The run's own overrides, minus those the new ones replace (``data=x`` drops ``data.*``)."""
    recorded: list[str] = []
    if run_dir is not None and (run_dir / ".hydra" / "overrides.yaml").is_file():
        recorded = [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
    new_keys = {_key(o) for o in overrides}
    kept = [
        o for o in recorded
        if not any(_key(o) == k or _key(o).startswith(k + ".") for k in new_keys)
        and not _key(o).startswith("hydra.")
    ]
    return kept + list(overrides)


def user_config_dirs(run_dir: Path | None) -> list[str]:
    """The user's own config folders the run composed with (``kdexp --config-dir``,
    ``kdexp.run(config_dir=)``), as its ``.hydra/hydra.yaml`` records them; those still there."""
    record = run_dir / ".hydra" / "hydra.yaml" if run_dir is not None else None
    if record is None or not record.is_file():
        return []
    sources = OmegaConf.select(OmegaConf.load(record), "hydra.runtime.config_sources") or []
    dirs = [str(s.path).removeprefix("file://") for s in sources if s.get("provider") == "command-line"]
    return [d for d in dirs if Path(d).is_dir()]


def load_config(run: str | Path, overrides: Sequence[str] = ()) -> Any:
    """The composed run config (data, profile, paths) for evaluating ``run`` with ``overrides``,
    with the user's config folders the run had (its data may be theirs)."""
    from kdexp.tools.config import compose_context

    run_dir = run_folder(run)
    source = config_folder(run_dir)
    output_dir = source or Path(run).parent
    with compose_context(merged_overrides(source, overrides), output_dir, user_config_dirs(source)) as job:
        cfg = OmegaConf.create({
            key: OmegaConf.to_container(job[key], resolve=True) if job.get(key) is not None else None
            for key in ("data", "profile", "incremental")
        })
    cfg.step = incremental_step(run_dir)  # None, or the class-incremental step evaluated
    return cfg


def test_datamodule(cfg: Any) -> Any:
    """The data module of ``cfg.data``, set up for testing (normalised tensors, no augmentation);
    for a class-incremental step (``cfg.step``), the step's own test data (:func:`step_test_data`)."""
    from kdexp.data import build_datamodule
    from kdexp.tools.config import plain

    datamodule = build_datamodule(plain(cfg.data))
    datamodule.prepare_data()
    datamodule.setup("test")
    if cfg.get("step"):
        return step_test_data(datamodule, plain(cfg.incremental), int(cfg.step))
    return datamodule


def step_test_data(base: Any, incremental: dict[str, Any], step: int) -> Any:
    """Step ``step``'s (1-based) test data: the test images of the classes seen up to it, each
    label renamed to its position in the run's class order (``incremental.class_order``, or the
    seeded shuffle), as the step's head predicts them (kdexp.incremental.protocol)."""
    from kdexp.incremental.protocol import ClassSubset, StepDataModule, class_split, dataset_labels

    split = class_split(incremental, base.num_classes)
    if not 1 <= step <= split.tasks:
        raise ValueError(f"step{step}: the run has incremental.tasks={split.tasks} steps (step1 .. step{split.tasks})")
    seen, label_map = split.seen(step - 1), split.label_map()
    indices = torch.nonzero(label_map[dataset_labels(base.test_set)] < seen).flatten()
    test = ClassSubset(base.test_set, indices, label_map)
    return StepDataModule(base, seen, test, test, test)


def check_compatible(card: dict[str, Any], datamodule: Any, data_name: str, role: str, model: nn.Module | None = None) -> None:
    """The data must have the model's number of classes and input channels, and images of a size
    the model takes (a model with a fixed input size, e.g. ``mlp``, takes only its own)."""
    classes, shape = int(card["num_classes"]), tuple(card["input_shape"])
    if datamodule.num_classes != classes:
        raise ValueError(
            f"data={data_name} has {datamodule.num_classes} classes but the {role} ({card.get('name')}) "
            f"predicts {classes}; evaluate on a dataset with the same {classes} classes (data=...)"
        )
    data_shape = tuple(datamodule.input_shape)
    if data_shape[0] != shape[0]:
        raise ValueError(
            f"data={data_name} has {datamodule.input_shape[0]}-channel images but the {role} expects "
            f"{shape[0]} channels (input shape {list(shape)})"
        )
    if model is None or data_shape == shape:
        return
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *data_shape))
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"data={data_name} has images of shape {list(data_shape)} but the {role} ({card.get('name')}) "
            f"was built for {list(shape)} and cannot take others ({str(err).splitlines()[0]}); evaluate on "
            f"images of shape {list(shape)} (e.g. data.image_shape={list(shape)} for data=fake)"
        ) from None


@torch.inference_mode()
def test_metrics(models: dict[str, nn.Module], loader: Any, num_classes: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Top-1 (top-5 over 10 classes) accuracy of each model, and each model's top-1 agreement
    with the teacher (fraction of test images where both predict the same class)."""
    from torchmetrics import MeanMetric

    from kdexp.methods.base import accuracy_metrics

    metrics = {role: accuracy_metrics(num_classes).to(device) for role in models}
    agreement = {role: MeanMetric().to(device) for role in models if role != "teacher"}
    for model in models.values():
        model.to(device).eval()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = {role: model(x) for role, model in models.items()}
        for role, z in logits.items():
            metrics[role].update(z, y)
            if "teacher" in logits and role in agreement:
                agreement[role].update((z.argmax(1) == logits["teacher"].argmax(1)).float())
    out = {role: {f"{k}_top1" if k == "acc" else k: float(v) for k, v in m.compute().items()} for role, m in metrics.items()}
    for role, metric in agreement.items():
        if "teacher" in models:
            out[role]["agreement_top1"] = float(metric.compute())
    return out


def evaluate_run(
    run: str | Path,
    overrides: Sequence[str] = (),
    role: str = "student",
    teacher: str = "auto",
    device: str = "auto",
    record: bool = True,
    profile: bool = True,
) -> dict[str, Any]:
    """Evaluate ``role`` of ``run`` (and its teacher, unless ``teacher='none'``) on a test split.

    Returns a results dict shaped like a run's (``run``, ``teacher``, ``student``, ``comparison``
    with ``agreement_top1``); measures cost and latency with the run's ``profile.*`` settings
    unless ``profile`` is False or ``profile.enabled=false``. ``record``: write the result under
    ``<run>/evaluations/``.
    """
    from kdexp.saved.load import load_artifact
    from kdexp.results import comparison
    from kdexp.runtimes import profile_runtimes

    if teacher not in ("auto", "none", "required"):
        raise ValueError(f"teacher={teacher!r} is not allowed; choose auto (if the run has one), none or required")
    if role == "teacher" and teacher != "required":
        teacher = "none"  # the teacher alone, in the student's column
    cfg = load_config(run, overrides)
    student = load_artifact(run, role)
    run_dir = run_folder(run)
    teacher_art = None
    if teacher != "none" and (Path(run).suffix == ".ckpt" or (run_dir and (run_dir / "teacher.json").is_file())):
        try:
            teacher_art = load_artifact(run, "teacher")
        except (FileNotFoundError, ValueError) as err:
            if teacher == "required":
                raise
            print(f"kdexp-eval: evaluating without the teacher ({err})", file=sys.stderr)
    elif teacher == "required":
        raise FileNotFoundError(f"run={str(run)!r} has no teacher to evaluate")
    datamodule = test_datamodule(cfg)
    check_compatible(student.card, datamodule, cfg.data.name, role, student.module)
    models = {"student": student.module}
    if teacher_art is not None:
        try:
            check_compatible(teacher_art.card, datamodule, cfg.data.name, "teacher", teacher_art.module)
            models["teacher"] = teacher_art.module
        except ValueError as err:  # e.g. a class-incremental step's teacher: the previous step, fewer classes
            if teacher == "required":
                raise
            print(f"kdexp-eval: evaluating without the teacher ({err})", file=sys.stderr)
            teacher_art = None
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    scores = test_metrics(models, datamodule.test_dataloader(), datamodule.num_classes, dev)
    agreement = scores["student"].pop("agreement_top1", None)
    results: dict[str, Any] = {
        "run": {
            "method": "eval",
            "evaluated": str(run),
            "role": role,
            "data": cfg.data.name,
            "test_images": len(datamodule.test_set),
            "teacher": teacher_art.card.get("name") if teacher_art else None,
            "student": student.card.get("name") + (" = the run's teacher" if role == "teacher" else ""),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "teacher": scores.get("teacher", {}),
        "student": scores["student"],
    }
    if profile and cfg.profile.enabled:
        for name, model in models.items():
            results[name].update(profile_runtimes(model, datamodule.input_shape, cfg.profile, dev))
    results["comparison"] = comparison(results["teacher"], results["student"]) if teacher_art else {}
    if agreement is not None:
        results["comparison"]["agreement_top1"] = agreement
    if record and run_dir is not None:
        results["run"]["record"] = str(write_record(run_dir, results))
    return results


def write_record(run_dir: Path, results: dict[str, Any]) -> Path:
    """``<run>/evaluations/<role>-<data>-<time>.json``; an existing name gets a counter, never replaced."""
    from kdexp.tools.files import write_json

    folder = run_dir / "evaluations"
    folder.mkdir(exist_ok=True)
    run = results["run"]
    stem = f"{run['role']}-{run['data']}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{stem}.json", 1
    while path.exists():
        path, n = folder / f"{stem}-{n}.json", n + 1
    write_json(path, results)
    return path
