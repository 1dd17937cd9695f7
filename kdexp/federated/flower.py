"""``federated.engine=flower``: the run on Flower's deployment runtime (one SuperLink, one
SuperNode per client; kdexp.federated.flower_apps holds the ServerApp and ClientApp).

kdexp writes the run's resolved config and a small Flower App (a ``pyproject.toml`` naming the
apps) under ``<run>/flower/``, starts a SuperLink on ``federated.flower.host:port`` (unless
``federated.flower.superlink`` names a running one) and one SuperNode per client (unless
``start_supernodes=false``: they run on other machines), submits the run with ``flwr run``,
waits for it, and stops every process it started, whatever happens. Everything it starts gets
``FLWR_TELEMETRY_ENABLED=0``, and binds to loopback unless ``host`` names another address.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from kdexp.federated.experiment import FederatedExperiment
from kdexp.federated.rounds import RoundsState
from kdexp.tools.files import write_atomic
from kdexp.tools.weights import read_torch

log = logging.getLogger("kdexp")
CONNECTION = "kdexp"  # the SuperLink connection's name in the Flower config kdexp writes

APP_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "kdexp-federated"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "kdexp"

[tool.flwr.app.components]
serverapp = "kdexp_flower_app:server_app"
clientapp = "kdexp_flower_app:client_app"

[tool.flwr.app.config]
kdexp-config = ""
kdexp-progress = ""
"""
APP_MODULE = (  # Flower finds the apps by reading this file's assignments
    '"""kdexp\'s federated run as a Flower App (written by kdexp.federated.flower)."""\n'
    "from kdexp.federated import flower_apps\n\n"
    "client_app = flower_apps.client_app\n"
    "server_app = flower_apps.server_app\n"
)


def tool(name: str) -> str:
    """A Flower command from this environment (beside the running Python), else from PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"Flower's `{name}` command is not installed: pip install 'kdexp[flower]'")
    return found


def flower_env(home: Path) -> dict[str, str]:
    """The environment of every Flower process kdexp starts: no telemetry, its own Flower home,
    kdexp importable."""
    source = str(Path(__file__).resolve().parents[2])  # the folder holding the kdexp package
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
    bin_dir = str(Path(tool("flower-superlink")).parent)  # the SuperLink starts flower-superexec from PATH
    return {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_HOME": str(home), "PYTHONPATH": path,
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Flower SuperLink exited with status {process.returncode} before listening on {host}:{port}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


class Started:
    """The processes kdexp started (each in its own process group), stopped in reverse order."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.processes = logs, env, []

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.processes.append((process, out))
        return process

    def stop(self) -> None:
        for process, out in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # its own group: its ServerApp/ClientApp children too
        for process, out in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            out.close()


@contextmanager
def started(logs: Path, env: dict[str, str]) -> Iterator[Started]:
    procs = Started(logs, env)
    try:
        yield procs
    finally:
        procs.stop()


def write_app(work: Path, cfg: dict[str, Any], superlink: str) -> Path:
    """The run's config, the Flower App folder and the Flower config naming the SuperLink."""
    app = work / "app"
    app.mkdir(parents=True, exist_ok=True)
    write_atomic(work / "kdexp_config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    write_atomic(app / "pyproject.toml", APP_PYPROJECT)
    write_atomic(app / "kdexp_flower_app.py", APP_MODULE)
    (work / "home").mkdir(exist_ok=True)
    write_atomic(work / "home" / "config.toml",
                 f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{superlink}"\ninsecure = true\n')
    return app


def start_nodes(procs: Started, opts: dict[str, Any], superlink: str, clients: int) -> None:
    host, port = str(opts.get("host", "127.0.0.1")), int(opts.get("port", 9091))
    for k in range(clients):
        procs.start(f"supernode{k}", [
            tool("flower-supernode"), "--insecure", "--superlink", superlink, "--host", host, "--port", str(port + 1 + k),
            "--node-config", f"partition-id={k} num-partitions={clients}",
        ])


def run_flower(
    exp: FederatedExperiment, start: RoundsState | None, after_round: Callable[[RoundsState, dict[str, Any]], None], run_dir: Path,
) -> RoundsState:
    """The whole run on Flower; then every round's record through ``after_round`` (curves, log)."""
    opts = dict(exp.settings.flower or {})
    host, port = str(opts.get("host", "127.0.0.1")), int(opts.get("port", 9091))
    timeout = float(opts.get("timeout_s", 900))
    superlink = str(opts.get("superlink") or f"{host}:{port}")
    work = run_dir / "flower"
    app = write_app(work, exp.cfg, superlink)
    progress = work / "progress.pt"
    env = flower_env(work / "home")
    with started(work, env) as procs:
        link = None
        if not opts.get("superlink"):
            link = procs.start("superlink", [tool("flower-superlink"), "--insecure", "--host", host, "--port", str(port),
                                             "--disable-runtime-dependency-installation", "--database", str(work / "superlink.db")])
        wait_for_port(*superlink.rsplit(":", 1)[0:1], int(superlink.rsplit(":", 1)[1]), 60, link)
        if opts.get("start_supernodes", True):
            start_nodes(procs, opts, superlink, exp.settings.clients)
        config = f"kdexp-config=\"{work / 'kdexp_config.yaml'}\" kdexp-progress=\"{progress}\""
        submit = [tool("flwr"), "run", str(app), CONNECTION, "--run-config", config, "--stream"]
        log.info("Flower: %s", " ".join(submit))
        with open(work / "flwr_run.log", "wb") as out:
            done = subprocess.run(submit, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)
    saved = read_torch(progress) if progress.is_file() else None
    if saved is None or not saved.get("done"):
        raise RuntimeError(f"the Flower run did not finish (flwr run exited {done.returncode}); its logs are in {work}")
    state = RoundsState(saved["server"])
    for record in saved["history"]:
        state.history.append(record)
        after_round(state, record)
    return state
