"""Issue 17, finding 9: `kdexp --help` and `--cfg job` must not import torch or Lightning."""

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


@pytest.mark.parametrize("flag", ["--help", "--cfg=job", "--shell-completion"])
def test_cli_answers_without_importing_torch(flag: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(flag=flag)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert "HEAVY []" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "CUDA" not in proc.stderr
