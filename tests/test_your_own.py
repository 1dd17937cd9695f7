"""kdexp from a user's own project: their configs (--config-dir), their models (_target_), their
data (_target_), and the installed wheel running docs/your_own.md from a folder outside the
repository (``-m wheel``: the one test here that builds and installs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_RUN

DOC = REPO / "docs" / "your_own.md"
SPEED = ("trainer.max_epochs=3", "profile.min_run_time=0.05", "profile.throughput_batch=8")  # the test's only additions to the doc
# A second data file of the user's, for what the doc's image folder does not show: tensors, a
# LightningDataModule, and the mistakes a data target can make.
USERDATA = '''
import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset


def blobs(size: int = 8, count: int = 48, channels: int = 1):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(count) % 4
    x = torch.randn(count, channels, size, size, generator=g) * 0.1 + y.view(-1, 1, 1, 1) * 0.5
    return TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:])


class BlobsModule(pl.LightningDataModule):
    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size

    def setup(self, stage=None):
        self.train, self.test = blobs(self.size)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=5)

    def test_dataloader(self):
        return torch.utils.data.DataLoader(self.test, batch_size=5)


def not_data():
    return 42
'''
BLOBS = "name: blobs\n_target_: userdata.blobs\nnum_classes: 4\ninput_shape: [1, 8, 8]\nval_size: 8\nbatch_size: 8\n"
TINY = [o for o in TINY_RUN if not o.startswith(("teacher=", "student="))] + ["logger=none"]


def doc_files(doc: str) -> dict[str, str]:
    """The files docs/your_own.md shows: a **`path`** line, then its fenced block."""
    return {m[1]: m[2] for m in re.finditer(r"\*\*`([^`]+)`\*\*\n\n```\w+\n(.*?)\n```", doc, re.S)}


def doc_session(doc: str) -> tuple[list[str], list[str]]:
    """(the commands of the doc's "Run it" console block, the table rows it shows: first cells)."""
    block = re.search(r"## Run it\n\n```console\n(.*?)\n```", doc, re.S)[1]
    commands = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    return commands, table_rows(block)


def table_rows(text: str) -> list[str]:
    """The first cells of the results table's rows (after its ┡ rule; the config tree above has │ too)."""
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("┡"))
    return [line.split("│")[1].strip() for line in lines[start:] if line.startswith("│")]


def write_project(folder: Path) -> Path:
    for rel, text in doc_files(DOC.read_text()).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text + "\n")
    (folder / "userdata.py").write_text(USERDATA)
    (folder / "configs" / "data" / "blobs.yaml").write_text(BLOBS)
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The doc's project folder (plus userdata.py), importable as the user's PYTHONPATH=. makes it."""
    folder = write_project(tmp_path_factory.mktemp("myproject"))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in ("mymodels", "mydata", "userdata"):
        sys.modules.pop(name, None)


def test_doc_shows_the_whole_project() -> None:
    files = doc_files(DOC.read_text())
    assert {"mymodels.py", "mydata.py", "make_example.py", "configs/student/tinynet.yaml", "configs/teacher/widenet.yaml",
            "configs/data/shapes.yaml", "configs/experiment/shapes_kd.yaml"} <= set(files)
    commands, rows = doc_session(DOC.read_text())
    assert commands[-1] == "PYTHONPATH=. kdexp --config-dir configs experiment=shapes_kd"
    assert rows[:2] == ["top-1 accuracy", "parameters"]


def test_user_configs_beside_kdexps(project: Path) -> None:
    """A user's student/<name>.yaml wins over the any-registered-name catch-all; their data gets the
    fallback teacher recipe; kdexp's own groups stay."""
    from kdexp.tools.config import compose_context, take_config_dirs

    with compose_context(["student=tinynet", "teacher=widenet", "data=blobs"], config_dirs=[project / "configs"]) as cfg:
        assert cfg.student._target_ == "mymodels.TinyNet" and cfg.student.in_channels == 1
        assert cfg.teacher.train.max_epochs == 4  # configs/teacher/recipe/fashion_mnist.yaml
    with compose_context(["student=resnet8x4", "data=cifar10"], config_dirs=[project / "configs"]) as cfg:
        assert (cfg.student.name, cfg.data.num_classes, list(cfg.data.input_shape)) == ("resnet8x4", 10, [3, 32, 32])
    assert take_config_dirs(["-cd", "a", "--config-dir=b", "x=1", "--config-dir", "c"]) == (["a", "b", "c"], ["x=1"])


def test_stated_facts_keep_every_cache_key() -> None:
    from kdexp.data import build_datamodule, data_identity
    from kdexp.teacher.cache import teacher_cache_key

    fmnist = {"name": "fashion_mnist", "root": None, "val_size": 5000, "batch_size": 128}
    stated = {**fmnist, "num_classes": 10, "input_shape": [1, 28, 28]}
    assert data_identity(stated) == fmnist
    assert teacher_cache_key({"name": "cnn_large"}, stated) == teacher_cache_key({"name": "cnn_large"}, fmnist)
    with pytest.raises(ValueError, match=r"data.num_classes=100 but data=cifar10 has num_classes \[10\]"):
        build_datamodule({"name": "cifar10", "root": "/nonexistent", "download": False, "num_classes": 100})
    with pytest.raises(ValueError, match=r"data.input_shape=\[3, 8, 8\] but data=fake"):
        build_datamodule({"name": "fake", "image_shape": [1, 8, 8], "input_shape": [3, 8, 8]})


def test_user_model_distils_reloads_and_says_when_it_cannot(kdexp_run, project, shared_cache, monkeypatch) -> None:
    out = kdexp_run(*TINY, "student=tinynet", "teacher=cnn_small", "method=kd", config_dir=project / "configs", cache_dir=shared_cache)
    assert out.error is None, out.message
    from mymodels import TinyNet

    assert out.results["student"]["params"] == sum(p.numel() for p in TinyNet(10, 1, 8).parameters())
    assert out.results["run"]["student"] == "tinynet" and out.results["student"]["macs"] > 0
    import kdexp

    student = kdexp.load_student(out.run_dir)
    assert type(student).__name__ == "TinyNet" and student(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    card = (out.run_dir / "student.json").read_text()
    assert '"source": "python"' in card and '"_target_": "mymodels.TinyNet"' in card
    monkeypatch.delitem(sys.modules, "mymodels")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(project)])
    with pytest.raises(ValueError, match=r"mymodels.TinyNet.*cannot be imported.*PYTHONPATH"):
        kdexp.load_student(out.run_dir)


def test_feature_method_on_the_users_stages_and_teacher(kdexp_run, project) -> None:
    """method=at through the stages the user's yamls name; the user's teacher trained by kdexp."""
    out = kdexp_run(*TINY, "student=tinynet", "teacher=widenet", "method=at", config_dir=project / "configs")
    assert out.error is None, out.message
    assert out.results["run"]["teacher"] == "widenet" and 0 <= out.results["student"]["acc_top1"] <= 1
    no_stages = kdexp_run(*TINY, "student=tinynet", "teacher=widenet", "method=at", "student.stages=null", config_dir=project / "configs")
    assert no_stages.exit_code == 2 and "stage" in no_stages.message


@pytest.mark.parametrize("target", ["userdata.blobs", "userdata.BlobsModule"])
def test_user_data_trains_and_evaluates(kdexp_run, project, target) -> None:
    out = kdexp_run("data=blobs", f"data._target_={target}", "method=vanilla", "student=tinynet", "trainer.max_epochs=1",
                    "logger=none", "profile.enabled=false", config_dir=project / "configs")
    assert out.error is None, out.message
    assert out.results["run"]["data"] == "blobs"
    import kdexp

    again = kdexp.evaluate(out.run_dir, teacher="none")  # its config folder found from the run's record
    assert again["student"]["acc_top1"] == pytest.approx(out.results["student"]["acc_top1"])


@pytest.mark.parametrize("override, says", [
    ("data._target_=userdata.nothing", r"data._target_='userdata.nothing': userdata has no attribute 'nothing'"),
    ("data._target_=nomodule.blobs", r"data._target_='nomodule.blobs' cannot be imported"),
    ("data._target_=userdata.not_data", r"data._target_='userdata.not_data' returned int"),
    ("data.input_shape=[3,8,8]", r"data.input_shape=\[3, 8, 8\] but the training images"),
    ("data.num_classes=2", r"data.num_classes=2 but a training label"),
    ("+data.colour=1", r"takes no argument colour \(data.colour\)"),
])
def test_a_bad_data_target_is_a_configuration_error(kdexp_run, project, override, says) -> None:
    out = kdexp_run("data=blobs", override, "method=vanilla", "student=tinynet", "logger=none", config_dir=project / "configs")
    assert out.exit_code == 2 and re.search(says, out.message), out.message


# --- the wheel ------------------------------------------------------------------------------------
def run(cmd: str, cwd: Path, venv: Path, timeout: int = 300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDEXP_", "PYTHON", "PL_", "HYDRA_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def install_wheel(tmp: Path) -> Path:
    """The repository's files (tracked or new, not ignored) copied, built into a wheel and installed
    into a fresh venv that reuses this environment's packages (torch, ...) through a .pth file."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    source = tmp / "source"
    for rel in listed.stdout.splitlines():
        if (REPO / rel).is_symlink() or (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel, follow_symlinks=False)
    py = sys.executable
    subprocess.run([py, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)],
                   check=True, capture_output=True)
    venv = tmp / "venv"
    subprocess.run([py, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the venv's own
    wheel = next((tmp / "dist").glob("kdexp-*.whl"))
    subprocess.run([py, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    return venv


@pytest.mark.wheel
@pytest.mark.starts_first
def test_the_wheel_runs_the_walkthrough_outside_the_repository(tmp_path: Path) -> None:
    venv = install_wheel(tmp_path)
    user = tmp_path / "home"
    user.mkdir()
    where = run("python -c 'import kdexp, hydra_plugins.kdexp_models as p; print(kdexp.__file__, p.__file__)'", user, venv)
    assert all(str(venv) in path for path in where.split()), where  # the installed copy, not the repository
    job = run("kdexp --cfg job", user, venv)
    assert "name: fashion_mnist" in job and "student:" in job
    project = write_project(user / "myproject")
    doc = DOC.read_text()
    commands, rows = doc_session(doc)
    assert commands[0] == "cd myproject"
    for command in commands[1:-1]:
        run(command, project, venv)
    table = run(f"{commands[-1]} {' '.join(SPEED)}", project, venv)
    assert table_rows(table) == rows, table
    folder = Path(re.search(r"Run folder: (\S+)", table)[1])
    assert folder.parent.parent == project / "outputs" and (folder / "results.json").is_file()
    site = Path(where.split()[0]).parent.parent
    assert not (site / "outputs").exists() and not (site / ".cache").exists()
    search = run("kdexp --config-dir configs --info searchpath", project, venv)
    assert f"file://{site}/kdexp/configs" in search and f"file://{project}/configs" in search
    evaluated = run(f"PYTHONPATH=. kdexp-eval run={folder}", project, venv)
    assert "eval: widenet → tinynet on shapes" in evaluated and "top-1 accuracy" in evaluated
    exported = run(f"PYTHONPATH=. kdexp-export {folder} format=torchscript", project, venv)
    assert "student.pt" in exported or "export" in exported
    report = run("kdexp-report outputs", project, venv)
    assert "tinynet" in report
