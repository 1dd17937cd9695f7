"""Scaling out: DDP evaluation that counts every sample once, rank-0 teacher provisioning, an
atomic and self-checking teacher cache, linear LR scaling, trainer/precision/launcher presets and
SLURM run folders that a requeued job resumes from. CPU only (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from conftest import HYDRA_RUN_DIR, REPO, make_method, run_cli
from kdexp import distributed
from kdexp.teacher import cache as teachers
from kdexp.teacher import store
from kdexp import models
from kdexp.data.fake import FakeDataModule
from kdexp.models import build_model
from kdexp.teacher.cache import teacher_cache_key

CONFIG_DIR = str(REPO / "configs")
SHAPE = (1, 28, 28)
DDP_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
           "TORCHELASTIC_RUN_ID")


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher or SLURM variables from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in DDP_ENV:
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- the acceptance test: 2 gloo processes, test accuracy = single-process evaluation ----------------
@torch.no_grad()
def correct_count(model: nn.Module, datamodule: FakeDataModule) -> tuple[int, list[torch.Tensor]]:
    model.eval()
    hits, preds = 0, []
    for x, y in datamodule.test_dataloader():
        pred = model(x).argmax(1)
        hits += int((pred == y).sum())
        preds.append(pred)
    return hits, preds


def test_ddp_two_processes_count_every_test_sample_once(tmp_path: Path) -> None:
    """33 test images on 2 ranks (17 + 16, in 3 and 2 batches): a padding sampler would count one twice."""
    data = ["data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=33",
            "data.eval_batch_size=8"]
    proc = run_cli(
        *data, "teacher=cnn_small", "student=cnn_tiny", "method=kd", "trainer=cpu", "trainer.devices=2",
        "trainer.strategy=ddp", "trainer.max_epochs=2", "teacher.train.max_epochs=1",
        "profile.enabled=false", "logger=none",
        cache_dir=tmp_path / "cache", run_dir=tmp_path / "ddp",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["run"]["teacher_source"]["source"] == "trained"  # by rank 0, before the launch
    assert len(list((tmp_path / "cache").glob("cnn_small-*.pt"))) == 1

    datamodule = FakeDataModule(image_shape=SHAPE, train_size=64, test_size=33, eval_batch_size=8)
    datamodule.setup("test")
    student = build_model({"name": "cnn_tiny"}, 10, 1).module
    student.load_state_dict(torch.load(tmp_path / "ddp" / "student.pt", weights_only=True))
    teacher = build_model({"name": "cnn_small"}, 10, 1).module
    teacher.load_state_dict(torch.load(results["run"]["teacher_source"]["path"], weights_only=True)["state_dict"])
    student_hits, student_preds = correct_count(student, datamodule)
    teacher_hits, teacher_preds = correct_count(teacher, datamodule)
    agree = int(sum((s == t).sum() for s, t in zip(student_preds, teacher_preds)))

    metrics = results["test_metrics"]
    assert metrics["test/student_acc"] * 33 == pytest.approx(student_hits, abs=1e-4)
    assert metrics["test/teacher_acc"] * 33 == pytest.approx(teacher_hits, abs=1e-4)
    assert metrics["test/agreement"] * 33 == pytest.approx(agree, abs=1e-4)
    assert results["student"]["acc_top1"] == pytest.approx(student_hits / 33, abs=1e-6)


@pytest.mark.slow
def test_ddp_spawn_two_cpu_processes(tmp_path: Path) -> None:
    proc = run_cli(
        "data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=33",
        "method=vanilla", "student=cnn_tiny", "trainer=ddp_spawn", "trainer.accelerator=cpu",
        "trainer.devices=2", "precision=32-true", "trainer.max_epochs=1", "profile.enabled=false",
        "logger=none", cache_dir=tmp_path / "cache", run_dir=tmp_path / "spawn",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "spawn" / "results.json").read_text())
    datamodule = FakeDataModule(image_shape=SHAPE, train_size=64, test_size=33)
    datamodule.setup("test")
    student = build_model({"name": "cnn_tiny"}, 10, 1).module
    student.load_state_dict(torch.load(tmp_path / "spawn" / "student.pt", weights_only=True))
    assert results["student"]["acc_top1"] * 33 == pytest.approx(correct_count(student, datamodule)[0], abs=1e-4)


# --- evaluation shards --------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(33, 2), (10, 3), (7, 7), (128, 4)])
def test_eval_shards_cover_every_sample_exactly_once(n: int, world: int) -> None:
    data = list(range(n))
    shards = [list(distributed.EvalShardSampler(data, world, rank)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == data
    assert [len(s) for s in shards] == [len(distributed.EvalShardSampler(data, world, r)) for r in range(world)]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_eval_shards_need_one_sample_per_rank() -> None:
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        distributed.EvalShardSampler(list(range(3)), 4, 0)


def test_eval_sampler_only_inside_a_distributed_evaluation() -> None:
    data = list(range(9))
    ddp_test = SimpleNamespace(world_size=2, global_rank=1, evaluating=True)
    assert list(distributed.eval_sampler(data, ddp_test)) == [1, 3, 5, 7]
    assert distributed.eval_sampler(data, None) is None  # e.g. Born-Again's ensemble, after fit
    assert distributed.eval_sampler(data, SimpleNamespace(world_size=1, global_rank=0, evaluating=True)) is None
    assert distributed.eval_sampler(data, SimpleNamespace(world_size=2, global_rank=0, evaluating=False)) is None
    dm = FakeDataModule(image_shape=SHAPE, test_size=9)
    dm.setup("test")
    dm.trainer = ddp_test
    assert len(dm.test_dataloader().dataset) == 9 and len(list(dm.test_dataloader().sampler)) == 4
    dm.trainer = None
    assert dm.test_dataloader().sampler.__class__.__name__ == "SequentialSampler"


# --- the teacher stays outside DDP and SyncBatchNorm -------------------------------------------------
def test_teacher_is_outside_the_wrapped_module() -> None:
    teacher = build_model({"name": "cnn_small"}, 10, 1)
    student = build_model({"name": "cnn_tiny"}, 10, 1)
    module = make_method("kd", student, teacher, input_shape=SHAPE, seed=None)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)  # what trainer.sync_batchnorm=true does
    assert not {id(p) for p in teacher.module.parameters()} & {id(p) for p in converted.parameters()}
    assert not any(k.startswith("teacher") for k in converted.state_dict())
    assert any(isinstance(m, nn.BatchNorm2d) for m in converted.teacher.modules())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in converted.teacher.modules())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in converted.student.modules())


# --- linear learning-rate scaling ---------------------------------------------------------------
def test_linear_lr_scaling_rule() -> None:
    assert distributed.scaled_lr(0.1, world_size=4, batch_size=64) == pytest.approx(0.4)
    assert distributed.scaled_lr(0.1, world_size=8, batch_size=64, reference_batch_size=256) == pytest.approx(0.2)
    assert distributed.scaled_lr(0.1, world_size=2, batch_size=64, accumulate_grad_batches=2) == pytest.approx(0.4)
    assert distributed.scaled_lr(0.1, world_size=1, batch_size=64) == pytest.approx(0.1)


@pytest.mark.parametrize("scale, expected", [(False, 0.1), (True, 0.8)])
def test_optimizer_lr_scales_with_world_size_only_when_asked(scale: bool, expected: float) -> None:
    student = build_model({"name": "cnn_tiny"}, 10, 1)
    opt = {"name": "sgd", "lr": 0.1, "scale_lr_with_world_size": scale, "reference_batch_size": 128}
    module = make_method("vanilla", student, None, input_shape=SHAPE, optimizer=opt, seed=None)
    module._trainer = SimpleNamespace(
        world_size=8, accumulate_grad_batches=1, datamodule=SimpleNamespace(batch_size=128), max_epochs=1,
        estimated_stepping_batches=1,
    )
    optimizer = module.configure_optimizers()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


# --- ranks from the launcher's environment ------------------------------------------------------
@pytest.mark.parametrize(
    "env, zero",
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),  # torchrun
        ({"LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # Lightning's ddp launcher, child process
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # first process of the second node
        ({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "job", "SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, False),
        ({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "job", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, True),
        # an interactive allocation: Lightning does not treat it as a SLURM launch
        ({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "bash", "SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, True),
    ],
)
def test_global_zero_from_the_launcher_environment(clean_env, env: dict, zero: bool) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert distributed.env_is_global_zero() is zero


# --- teacher cache: rank 0 trains, the other ranks wait; atomic writes; verified reads -----------------
TEACHER = {"source": "kdexp", "name": "cnn_tiny", "checkpoint": None, "seed": 0,
           "train": {"max_epochs": 1, "optimizer": {"name": "sgd", "lr": 0.1}, "scheduler": {"name": "none"}}}
DATA = {"name": "fake", "image_shape": [1, 28, 28], "num_classes": 10, "batch_size": 32, "num_workers": 0}


def entry_path(cache: Path) -> Path:
    return cache / f"cnn_tiny-{teacher_cache_key(TEACHER, DATA, {})}.pt"


def provide(cache: Path, log: Path):
    architecture = build_model(models.architecture_cfg(TEACHER), 10, 1)
    dm = FakeDataModule(image_shape=SHAPE)
    return teachers.provide_teacher(teachers.TeacherRequest(architecture, TEACHER, DATA, dm, {}, cache, log))


@pytest.fixture
def fake_training(monkeypatch):
    """train_teacher without training: counts its calls."""
    calls = []

    def train(teacher, datamodule, recipe, trainer_cfg, log_dir):
        calls.append(1)
        return {"test_acc": 0.5}

    monkeypatch.setattr(teachers, "train_teacher", train)
    monkeypatch.setattr(store, "WAIT_POLL_S", 0.02)
    return calls


def test_the_teacher_trains_in_one_process_whatever_the_run_scales_to(monkeypatch) -> None:
    seen = {}

    class Stop(Exception):
        pass

    def trainer(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(teachers.pl, "Trainer", trainer)
    ddp = {"accelerator": "gpu", "devices": 4, "num_nodes": 2, "strategy": "ddp", "sync_batchnorm": True,
           "precision": "bf16-mixed"}
    dm = FakeDataModule(image_shape=SHAPE)
    with pytest.raises(Stop):
        teachers.train_teacher(build_model({"name": "cnn_tiny"}, 10, 1), dm, TEACHER["train"], ddp, Path("log"))
    assert (seen["devices"], seen["num_nodes"], seen["strategy"], seen["sync_batchnorm"]) == (1, 1, "auto", False)
    assert seen["precision"] == "bf16-mixed"  # part of the cache key


def test_other_ranks_wait_for_rank_zero_and_never_train(tmp_path: Path, clean_env, fake_training) -> None:
    clean_env.setenv("LOCAL_RANK", "1")  # a child of Lightning's ddp launcher
    weights = build_model({"name": "cnn_tiny"}, 10, 1).module.state_dict()
    writer = threading.Timer(0.3, teachers.write_entry, (entry_path(tmp_path), weights, {"test_acc": 0.5}))
    writer.start()
    started = time.monotonic()
    teacher, info = provide(tmp_path, tmp_path / "log")
    writer.join()
    assert time.monotonic() - started >= 0.25 and info["source"] == "cache" and not fake_training
    assert all(torch.equal(v, weights[k]) for k, v in teacher.module.state_dict().items())


def test_other_ranks_stop_waiting_when_rank_zero_fails(tmp_path: Path, clean_env, monkeypatch) -> None:
    clean_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_env.setenv("MASTER_PORT", "29555")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(teachers, "train_teacher", broken)
    monkeypatch.setattr(store, "WAIT_POLL_S", 0.02)
    with pytest.raises(RuntimeError, match="out of memory"):
        provide(tmp_path, tmp_path / "log")  # rank 0: leaves a note for its launch
    assert not entry_path(tmp_path).exists()
    clean_env.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="rank 0 failed to train the teacher.*out of memory"):
        provide(tmp_path, tmp_path / "log")
    clean_env.setenv("MASTER_PORT", "29556")  # a later launch ignores the old note and waits
    clean_env.delenv("LOCAL_RANK")
    fake = lambda *a, **k: {"test_acc": 0.5}  # noqa: E731
    monkeypatch.setattr(teachers, "train_teacher", fake)
    assert provide(tmp_path, tmp_path / "log")[1]["source"] == "trained"
    assert not (tmp_path / (entry_path(tmp_path).name + ".failed")).exists()


def test_a_crash_mid_write_leaves_no_entry(tmp_path: Path, clean_env, fake_training) -> None:
    """A process killed while it writes the entry: later runs find no entry (only a stray temp file)."""
    script = (
        "import os, sys; sys.path.insert(0, 'tests'); import test_distributed as t; from kdexp.teacher import cache as teachers\n"
        "teachers.train_teacher = lambda *a, **k: {'test_acc': 0.5}\n"
        "def fsync(fd):\n"
        "    os._exit(9)  # killed after the bytes went to the temporary file, before the rename\n"
        "os.fsync = fsync\n"
        "from pathlib import Path; t.provide(Path(sys.argv[1]), Path(sys.argv[1]) / 'log')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in DDP_ENV}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=env, timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert not entry_path(tmp_path).exists() and len(list(tmp_path.glob(".cnn_tiny-*.tmp"))) == 1
    assert provide(tmp_path, tmp_path / "log")[1]["source"] == "trained"
    assert provide(tmp_path, tmp_path / "log")[1]["source"] == "cache"
    assert len(fake_training) == 1


@pytest.mark.parametrize("damage", ["truncated", "garbage", "digest"])
def test_a_damaged_entry_is_set_aside_and_retrained(tmp_path: Path, clean_env, fake_training, damage) -> None:
    assert provide(tmp_path, tmp_path / "log")[1]["source"] == "trained"
    path = entry_path(tmp_path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 100)
    else:  # loads fine, but one weight changed after the digest was taken
        blob = torch.load(path, weights_only=True)
        next(iter(blob["state_dict"].values())).add_(1.0)
        torch.save(blob, path)
    assert teachers.entry_problem(path) is not None
    teacher, info = provide(tmp_path, tmp_path / "log")
    assert info["source"] == "trained" and len(fake_training) == 2
    assert teachers.entry_problem(path) is None
    assert len(list(tmp_path.glob("cnn_tiny-*.pt.corrupt-*"))) == 1


def test_an_entry_without_digest_from_older_versions_is_reused(tmp_path: Path, clean_env, fake_training) -> None:
    weights = build_model({"name": "cnn_tiny"}, 10, 1).module.state_dict()
    torch.save({"state_dict": weights, "meta": {}}, entry_path(tmp_path))
    assert provide(tmp_path, tmp_path / "log")[1]["source"] == "cache" and not fake_training


def test_concurrent_processes_share_the_cache(tmp_path: Path, clean_env) -> None:
    """Two separate processes (not threads), rank 0 each: the file lock lets one of them train."""
    script = (
        "import sys, time; sys.path.insert(0, 'tests'); import test_distributed as t; from kdexp.teacher import cache as teachers\n"
        "teachers.train_teacher = lambda *a, **k: (time.sleep(1.0), {'test_acc': 0.5})[1]\n"
        "from pathlib import Path; print(t.provide(Path(sys.argv[1]), Path(sys.argv[1]) / 'log')[1]['source'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in DDP_ENV}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert sorted(out.split()[-1] for out, _ in outputs) == ["cache", "trained"]


# --- configuration: presets compose, bad combinations are refused early --------------------------------
def compose_train(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def test_trainer_and_precision_presets_compose() -> None:
    cfg = compose_train("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "precision=bf16-mixed")
    t = cfg.trainer
    assert (t.accelerator, t.devices, t.num_nodes, t.strategy, t.precision) == ("gpu", 4, 2, "ddp", "bf16-mixed")
    assert t.sync_batchnorm is False and t.max_epochs == 5  # the base preset underneath
    t = compose_train("trainer=ddp_spawn", "trainer.accelerator=cpu", "trainer.devices=2").trainer
    assert (t.strategy, t.accelerator, t.devices) == ("ddp_spawn", "cpu", 2)
    t = compose_train("trainer=cpu").trainer
    assert (t.accelerator, t.devices, t.precision) == ("cpu", 1, "32-true")
    assert compose_train("trainer=gpu", "precision=32-true").trainer.precision == "32-true"
    assert compose_train("trainer=gpu").trainer.precision == "16-mixed"
    assert compose_train().auto_resume == "slurm"
    assert compose_train("optimizer=adamw").optimizer.scale_lr_with_world_size is False


def test_slurm_launcher_composes_with_kdexp_defaults() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_train("hydra/launcher=slurm", "hydra.launcher.partition=gpu", hydra=True).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.max_num_timeout == 3 and launcher.partition == "gpu" and launcher.signal_delay_s == 120
    plain = compose_train("hydra/launcher=submitit_slurm", hydra=True).hydra.launcher  # the plugin's own
    assert plain._target_.endswith("SlurmLauncher") and plain.max_num_timeout == 0


def test_refused_combinations() -> None:
    with pytest.raises(ValueError, match="auto_resume='sometimes'"):
        distributed.check_distributed_cfg({}, "sometimes")
    with pytest.raises(ValueError, match="sync_batchnorm=true needs GPUs"):
        distributed.check_distributed_cfg({"accelerator": "cpu", "devices": 2, "sync_batchnorm": True}, "slurm")
    distributed.check_distributed_cfg({"accelerator": "gpu", "devices": 2, "sync_batchnorm": True}, "never")


# --- SLURM: a run folder per job, resumed after a requeue -----------------------------------------
@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "2024-01-01/00-00-00"),
        ({"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train.sbatch"}, "slurm/4242"),
        ({"SLURM_JOB_ID": "4243", "SLURM_JOB_NAME": "t", "SLURM_ARRAY_JOB_ID": "4200", "SLURM_ARRAY_TASK_ID": "3"},
         "slurm/4200_3"),
        ({"SLURM_JOB_ID": "4244", "SLURM_JOB_NAME": "interactive"}, "2024-01-01/00-00-00"),
    ],
)
def test_slurm_job_dir(clean_env, env: dict, expected: str) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert distributed.slurm_job_dir("2024-01-01/00-00-00") == expected


def test_resume_picks_the_newest_own_checkpoint(tmp_path: Path, clean_env) -> None:
    assert distributed.resume_checkpoint(None, tmp_path, "always") is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    hpc = tmp_path / "hpc_ckpt_2.ckpt"
    hpc.write_bytes(b"x")
    os.utime(last, (time.time() - 60, time.time() - 60))
    assert distributed.resume_checkpoint(None, tmp_path, "always") == str(hpc)  # Lightning's, newer
    os.utime(hpc, (time.time() - 120, time.time() - 120))
    assert distributed.resume_checkpoint(None, tmp_path, "always") == str(last)
    assert distributed.resume_checkpoint("given.ckpt", tmp_path, "always") == "given.ckpt"
    assert distributed.resume_checkpoint(None, tmp_path, "never") is None
    assert distributed.resume_checkpoint(None, tmp_path, "slurm") is None  # not in a SLURM job
    clean_env.setenv("SLURM_JOB_ID", "9")
    clean_env.setenv("SLURM_JOB_NAME", "train.sbatch")
    assert distributed.resume_checkpoint(None, tmp_path, "slurm") == str(last)


def test_a_requeued_slurm_job_resumes_in_its_own_run_folder(kdexp_run, clean_env, tmp_path: Path) -> None:
    """Faked SLURM variables (no SLURM_NTASKS, so Lightning itself does not switch to SLURM)."""
    env = {"KDEXP_ROOT": str(tmp_path), "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train.sbatch"}
    base = ["data=fake", "data.image_shape=[1,28,28]", "data.train_size=64",
            "data.test_size=32", "method=vanilla", "student=cnn_tiny", "trainer=cpu", "profile.enabled=false",
            "logger=none", "scheduler=none"]  # none: the second attempt may extend the schedule
    run = lambda *extra: kdexp_run(*base, *extra, run_dir=HYDRA_RUN_DIR, cache_dir=tmp_path / "cache", env=env)  # noqa: E731
    first = run("trainer.max_epochs=1")
    assert first.exit_code == 0, first.message
    run_dir = tmp_path / "outputs" / "slurm" / "4242"
    assert first.run_dir == run_dir
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    (run_dir / "results.json").unlink()  # the job was "killed" before it reported
    (run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"stale")  # older than last.ckpt: not chosen, then dropped
    os.utime(run_dir / "hpc_ckpt_1.ckpt", (time.time() - 3600, time.time() - 3600))
    second = run("trainer.max_epochs=2")  # the requeued attempt, with a longer schedule to show the resume
    assert second.exit_code == 0, second.message
    assert "Restoring states from the checkpoint path at" in second.output
    assert "last.ckpt" in second.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["epochs"] == 2 and not (run_dir / "hpc_ckpt_1.ckpt").exists()
