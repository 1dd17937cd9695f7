"""Check what TensorBoard's HParams tab shows for a sweep, as a user sees it (not run by CI).

Runs two tiny sweeps on FakeData — the README's vanilla-first one (``method=vanilla,kd,at``) and
one mixing ``kd`` and ``rkd`` — starts ``tensorboard --logdir <sweep>`` for each, asks the HParams
plugin's own endpoint (``POST /data/plugin/hparams/experiment``) for the table's columns and
sessions, and, when Chromium is installed (Debian: ``apt-get install chromium``), saves a headless
screenshot of the tab.

    python scripts/check_tensorboard_hparams.py [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = ("data=fake", "data.image_shape=[1,28,28]", "data.train_size=64", "data.test_size=32", "teacher=cnn_small",
        "student=cnn_tiny", "trainer.max_epochs=1", "teacher.train.max_epochs=1", "profile.min_run_time=0.05",
        "profile.throughput_batch=8")
SWEEPS = {
    "vanilla_first": ("method=vanilla,kd,at", "seed=0,1"),
    "kd_and_rkd": ("method=kd,rkd", "seed=0"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run_sweep(sweep_dir: Path, overrides: tuple[str, ...], cache: Path) -> None:
    env = {**os.environ, "KDEXP_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "kdexp.train", "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def inspect(sweep_dir: Path, screenshot: Path) -> dict:
    """Start TensorBoard on ``sweep_dir``, read the HParams experiment and sessions, screenshot."""
    port = free_port()
    tensorboard = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or "tensorboard"
    server = subprocess.Popen([tensorboard, "--logdir", str(sweep_dir), "--port", str(port), "--host", "127.0.0.1",
                               "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):  # until the plugin has read the runs
            try:
                experiment = post(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
                if experiment.get("hparamInfos"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        groups = post(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                     "STATUS_RUNNING"],
            "colParams": [], "startIndex": 0, "sliceSize": 1000,
        })
        shot = None
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium:
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1800,1100", "--virtual-time-budget=20000",
                            f"--screenshot={screenshot}", f"{base}/#hparams"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            shot = str(screenshot) if screenshot.is_file() else None
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "hparams": [h["name"] for h in experiment.get("hparamInfos", [])],
        "metrics": [m["name"]["tag"] for m in experiment.get("metricInfos", [])],
        "sessions": sum(len(g.get("sessions", [])) for g in groups.get("sessionGroups", [])),
        "session_names": sorted(s["name"] for g in groups.get("sessionGroups", []) for s in g.get("sessions", [])),
        "screenshot": shot,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where sweeps, screenshots and summary.json go")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="kdexp-hparams-check-"))
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, overrides in SWEEPS.items():
        sweep_dir = out / name
        if not (sweep_dir / "report.md").is_file():
            run_sweep(sweep_dir, overrides, out / "cache")
        summary[name] = found = inspect(sweep_dir, out / f"{name}.png")
        print(f"\n{name}: {found['sessions']} sessions {found['session_names']}")
        print(f"  first hyperparameters: {found['hparams'][:8]} ({len(found['hparams'])} in all)")
        print(f"  metrics: {found['metrics']}")
        print(f"  screenshot: {found['screenshot'] or 'none (no chromium)'}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsummary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
