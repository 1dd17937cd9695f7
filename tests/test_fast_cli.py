"""Issue 17, finding 9: `kdexp --help` and `--cfg job` must not import Lightning (nor torch, except
--help, which reads the model registry to list the registered models)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = (
    "import sys, runpy; sys.argv = ['kdexp', {flag!r}]\n"
    "try:\n    runpy.run_module('kdexp.train', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print('HEAVY', sorted(m for m in ('torch', 'pytorch_lightning', 'torchvision') if m in sys.modules))\n"
)


@pytest.mark.parametrize(("flag", "heavy"), [("--help", "['torch']"), ("--cfg=job", "[]"), ("--shell-completion", "[]")])
def test_cli_answers_without_importing_lightning(flag: str, heavy: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(flag=flag)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert f"HEAVY {heavy}" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "CUDA" not in proc.stderr


def test_help_says_kdexp_and_lists_the_registered_models() -> None:
    """Round 3, 25.9: the help said "train is powered by Hydra" and listed no model under student:/teacher:."""
    from kdexp.models import available_models
    from kdexp.ranking.models import RANKING_MODELS

    proc = subprocess.run([sys.executable, "-m", "kdexp.train", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("kdexp: knowledge distillation"), proc.stdout[:500]
    assert "train is powered by Hydra" not in proc.stdout
    groups = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if line.startswith(("student: ", "teacher: ")))
    for role in ("student", "teacher"):
        assert set(groups[role].split(", ")) == {*available_models(), "timm", "torchvision", *RANKING_MODELS.names()}


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """Round 3, item 13: `kdexp --help | head -1` raised BrokenPipeError about one run in three."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line is written: every write fails (EPIPE)
    try:
        proc = subprocess.run([sys.executable, "-m", "kdexp.train", "--help"], cwd=REPO, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 141
