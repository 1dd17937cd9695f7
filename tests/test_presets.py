"""debug= presets, callbacks= choices, tags and the optional local config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

import kdexp
from kdexp.tools.config import compose_context as hydra_context
from conftest import REPO

DEBUG = ["fdr", "overfit", "limit", "profiler"]


def composed(*overrides: str, output_dir: Path) -> dict:
    from omegaconf import OmegaConf

    with hydra_context(overrides, output_dir) as cfg:
        return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("preset", DEBUG)
def test_debug_presets_never_use_the_shared_teacher_cache(preset: str, tmp_path: Path) -> None:
    """fast_dev_run and overfit_batches give an uncached teacher (kdexp.teacher.cache); limit_* and
    profiler never reach the teacher, so those presets keep the teacher cache in the run folder."""
    from kdexp.teacher.cache import DEBUG_TRAINER_KEYS

    cfg = composed(f"debug={preset}", output_dir=tmp_path / "run")
    private = cfg["paths"]["cache_dir"] == str(tmp_path / "run" / "debug_teacher_cache")
    switched = any(cfg["trainer"].get(k) for k in DEBUG_TRAINER_KEYS)
    assert private != switched  # exactly one of the two guards
    expected = {
        "fdr": {"fast_dev_run": True},
        "overfit": {"overfit_batches": 3, "max_epochs": 20},
        "limit": {"limit_train_batches": 20, "limit_val_batches": 5, "limit_test_batches": 5},
        "profiler": {"max_epochs": 1},
    }[preset]
    assert expected.items() <= cfg["trainer"].items()
    if preset == "profiler":  # the student's trainer gets an object; the teacher's recipe none
        assert cfg["trainer"]["profiler"]["_target_"] == "pytorch_lightning.profilers.SimpleProfiler"
        assert cfg["teacher"]["train"]["profiler"] is None


@pytest.mark.parametrize(
    "choice, extra",
    [("none", set()), ("early_stopping", {"EarlyStopping"}), ("model_summary", {"RichModelSummary"})],
)
def test_callbacks_choices(choice: str, extra: set[str], tmp_path: Path) -> None:
    def names(choice: str) -> set[str]:
        cfg = composed(f"callbacks={choice}", output_dir=tmp_path)
        return {type(instantiate(c)).__name__ for c in cfg["callbacks"].values() if c}

    default = names("default")
    assert {"ModelCheckpoint", "RichProgressBar", "LearningRateMonitor", "FiniteLossGuard"} <= default
    assert names(choice) == (set() if choice == "none" else default | extra)


def test_local_config_is_optional_and_git_ignored(tmp_path: Path) -> None:
    defaults = (REPO / "configs" / "train.yaml").read_text()
    assert "- optional local: default" in defaults
    assert "configs/local/*.yaml" in (REPO / ".gitignore").read_text().splitlines()
    composed(output_dir=tmp_path)  # composes with or without configs/local/default.yaml


def test_fdr_run_records_tags_and_leaves_the_shared_cache_alone(tmp_path: Path, monkeypatch) -> None:
    shared = tmp_path / "shared_cache"
    shared.mkdir()
    monkeypatch.setenv("KDEXP_CACHE_DIR", str(shared))  # where paths.cache_dir points without the preset
    results = kdexp.run(
        [
            "data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32",
            "teacher=cnn_small", "student=cnn_tiny", "debug=fdr", "tags=[smoke,fdr]", "logger=none",
            f"hydra.run.dir={tmp_path / 'unused'}", f"paths.root_dir={tmp_path}",
        ],
        output_dir=tmp_path / "run",
    )
    assert results["run"]["tags"] == ["smoke", "fdr"] and results["run"]["complete"]
    assert results["run"]["teacher_source"]["source"] == "trained"
    assert results["run"]["teacher_source"]["cached"] is False
    assert not list(shared.glob("*.pt"))  # no teacher entry (the profile's timings.json may be there)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["run"]["tags"] == ["smoke", "fdr"]


def test_debug_profiler_runs_and_writes_the_profile(tmp_path: Path) -> None:
    """Round 3, item 12: the profiler's config reached Lightning as a dict and the run crashed."""
    results = kdexp.run(
        ["data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32", "student=cnn_tiny",
         "method=vanilla", "debug=profiler", "logger=none", "profile.enabled=false", f"paths.root_dir={tmp_path}"],
        output_dir=tmp_path / "run",
    )
    assert results["run"]["complete"]
    report = (tmp_path / "run" / "fit-profiler.txt").read_text()
    assert report.startswith("FIT Profiler Report") and "run_training_epoch" in report
