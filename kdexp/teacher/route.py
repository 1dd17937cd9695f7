"""Teachers other than one frozen, converged model: a trainable teacher (rocket's booster), and a
teacher's training route (RCO's anchors) kept beside its cache entry.

Route checkpoints belong to the teacher's cache entry: ``<name>-<key>.route-epoch<k>.pt`` beside
``<name>-<key>.pt``, under the same key and lock, written with the entry's atomic, digest-verified
writes (kdexp.teacher.store: named only once they load back) and verified on every
read. A route is recorded while the teacher trains; a cached teacher whose route lacks a requested
epoch is trained again (same recipe and seed) with that epoch recorded, since the weights of a
past epoch cannot be recovered. That second training is not bit-identical to the first on a CPU,
so it never replaces the cached teacher other runs use: it is kept as its own entry,
``<name>-<key>.routed.pt`` with its route files beside it, and RCO's converged anchor is the
teacher of that route.
"""

from __future__ import annotations

import copy
import logging
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch import Tensor, nn

from kdexp.distributed import env_is_global_zero
from kdexp.models import BuiltModel
from kdexp.models.route import AnchorRoute
from kdexp.teacher.cache import (
    TeacherRequest,
    debug_settings,
    entries,
    load_entry,
    train_and_store,
    wait_for_entry,
    write_verified,
)
from kdexp.teacher.store import WAIT_POLL_S
from kdexp.tools.weights import load_weights

log = logging.getLogger(__name__)


# --- a teacher the method trains (rocket launching) -------------------------------------------
def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): compiled code, not weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def trainable_teacher(
    architecture: BuiltModel, teacher_cfg: dict[str, Any], num_classes: int, method: str
) -> tuple[BuiltModel, dict[str, Any]]:
    """The teacher of a method that trains it jointly with the student: freshly initialised (the
    run's seed), or initialised from ``teacher.checkpoint``; never cached, never frozen."""
    path = teacher_cfg.get("checkpoint")
    info: dict[str, Any] = {"source": "trained jointly", "method": method}
    if not path:
        return architecture, {**info, "init": "scratch", "summary": f"trained jointly with the student ({method}), from scratch"}
    needs = (
        f"method={method} trains its teacher together with the student, so teacher.checkpoint must "
        "hold trainable weights (a state_dict, Lightning or RepDistiller checkpoint), or be null to "
        "train the teacher from scratch as the paper does"
    )
    if not isinstance(path, (str, Path)):
        raise ValueError(f"teacher.checkpoint={path!r}: {needs}; give one path")
    if is_torchscript(path):
        raise ValueError(f"teacher.checkpoint={str(path)!r} is a TorchScript archive (a frozen, compiled model): {needs}")
    try:
        load_weights(architecture, path, num_classes)
    except ValueError as err:
        raise ValueError(f"{err}. ({needs})") from None
    summary = f"trained jointly with the student ({method}), initialised from {path}"
    return architecture, {**info, "init": "checkpoint", "path": str(path), "summary": summary}


# --- a teacher's route (RCO) --------------------------------------------------------------------
class RouteRecorder(pl.Callback):
    """Keeps a CPU copy of the trained model's weights at the end of each epoch in ``epochs`` (1-based)."""

    def __init__(self, epochs: list[int]) -> None:
        self.epochs = set(epochs)
        self.states: dict[int, dict[str, Tensor]] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch in self.epochs:
            state = pl_module.student.state_dict()
            self.states[epoch] = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def route_path(entry: Path, epoch: int) -> Path:
    """Where the route checkpoint of ``epoch`` of the cache entry ``entry`` lives."""
    return entry.with_name(f"{entry.stem}.route-epoch{epoch}.pt")


def routed_entry(entry: Path) -> Path:
    """The entry of a teacher trained again for its route, beside the cached teacher ``entry``."""
    return entry.with_name(f"{entry.stem}.routed.pt")


def route_files(entry: Path, epochs: list[int], final: int) -> dict[int, Path]:
    """The file of each anchor epoch of the teacher whose entry is ``entry``."""
    return {e: (entry if e == final else route_path(entry, e)) for e in epochs}


def _frozen(model: BuiltModel) -> nn.Module:
    return model.module.eval().requires_grad_(False)


def _wait_for_a_route(cached: Path, epochs: list[int], final: int) -> Path:
    """On a rank other than 0: the entry whose route rank 0 provides — the cached teacher's own
    route when it is complete, else the routed entry beside it (once rank 0 has written it all)."""
    import time

    while True:
        for entry in (cached, routed_entry(cached)):
            if all(path.is_file() for path in route_files(entry, epochs, final).values()):
                return entry
        time.sleep(WAIT_POLL_S)


def provide_route(request: TeacherRequest) -> tuple[BuiltModel, dict[str, Any]]:
    """The teacher as an ``AnchorRoute`` of frozen anchors, and where they came from.

    With ``teacher.checkpoint`` (one path or a list) the checkpoints are the anchors, in order.
    Otherwise ``request.route_epochs`` (1-based teacher epochs) are taken from the teacher's cached
    route, training the teacher (and recording its route) when any of them is missing or corrupt.
    """
    architecture, teacher_cfg, trainer_cfg = request.architecture, request.teacher, request.trainer
    num_classes = request.datamodule.num_classes
    given = teacher_cfg.get("checkpoint")
    if given:
        paths = [given] if isinstance(given, (str, Path)) else list(given)
        anchors = []
        for path in paths:
            model = copy.deepcopy(architecture)
            load_weights(model, path, num_classes)
            anchors.append(_frozen(model))
        route = AnchorRoute(anchors, [str(p) for p in paths], [None] * len(paths))
        info = {"source": "checkpoint", "path": str(paths[-1]), "route": [str(p) for p in paths]}
        info["summary"] = f"route of {len(paths)} checkpoints, the last {paths[-1]}"
    elif debug_settings(trainer_cfg):
        raise ValueError(
            f"method=rco takes anchors from the teacher's training route, which "
            f"{', '.join(f'trainer.{k}' for k in debug_settings(trainer_cfg))} would cut short (and keep out "
            "of the cache); turn them off, or use debug=fast (it limits batches, not epochs)"
        )
    else:
        route, info = _cached_route(request)
    built = BuiltModel(route, architecture.name, architecture.stages, architecture.classifier, architecture.cfg)
    return built, info


def _cached_route(request: TeacherRequest) -> tuple[AnchorRoute, dict[str, Any]]:
    architecture, teacher_cfg, epochs = request.architecture, request.teacher, list(request.route_epochs or [])
    num_classes = request.datamodule.num_classes
    final = int(teacher_cfg.get("train", {}).get("max_epochs", 0))
    key, cached = request.entry()
    store = entries(cached)
    entry = cached
    files = route_files(entry, epochs, final)
    models = {e: copy.deepcopy(architecture) for e in epochs}
    source = "cache"
    if not env_is_global_zero():
        entry = _wait_for_a_route(cached, epochs, final)
        files = route_files(entry, epochs, final)
        for epoch, path in files.items():
            wait_for_entry(models[epoch], path, num_classes)
    else:
        with store.locked(cached):  # the same lock as the teacher's own entry
            problems = {e: load_entry(models[e], files[e], num_classes) for e in epochs}
            bad = {e: p for e, p in problems.items() if p is not None}
            if bad and load_entry(copy.deepcopy(architecture), cached, num_classes) is None:
                # The cached teacher has no such route: never replace it (other runs use it); the
                # teacher trained again for its route is an entry of its own.
                for epoch, problem in bad.items():
                    if problem != "absent":
                        store.set_aside(files[epoch], problem)
                entry = routed_entry(cached)
                files = route_files(entry, epochs, final)
                problems = {e: load_entry(models[e], files[e], num_classes) for e in epochs}
                bad = {e: p for e, p in problems.items() if p is not None}
            if bad:
                for epoch, problem in bad.items():
                    if problem != "absent":
                        store.set_aside(files[epoch], problem)
                log.info(
                    "Teacher %s: route checkpoints for epochs %s are not cached; training it with its route recorded",
                    teacher_cfg["name"], sorted(bad),
                )
                recorder = RouteRecorder([e for e in epochs if e != final])
                _, trained = train_and_store(request, entry, key, callbacks=[recorder])
                missing = [e for e in epochs if e != final and e not in recorder.states]
                if missing:
                    raise ValueError(
                        f"the teacher's training never reached epoch(s) {missing} (teacher.train.max_epochs={final})"
                    )
                for epoch, state in recorder.states.items():  # named only once they load back (write_verified)
                    write_verified(files[epoch], state, {"route_of": entry.name, "epoch": epoch}, models[epoch], num_classes)
                if final in epochs:  # the teacher's own entry, verified by train_and_store
                    problem = load_entry(models[final], files[final], num_classes)
                    if problem is not None:
                        raise RuntimeError(f"the teacher just written to {files[final]} does not load back: {problem}")
                source = "trained"
                info_metrics = {k: v for k, v in trained.items() if k not in ("source", "path")}
    anchors = [_frozen(models[e]) for e in epochs]
    route = AnchorRoute(anchors, [f"epoch {e}" for e in epochs], list(epochs))
    if entry != cached:
        log.info("RCO's anchors come from %s (the teacher trained again for its route); %s is unchanged", entry.name, cached.name)
    info: dict[str, Any] = {
        "source": source,
        "path": str(entry),
        "route": {f"epoch {e}": str(files[e]) for e in epochs},
    }
    if source == "trained":
        info.update(info_metrics)
    info["summary"] = f"{'trained now, cached' if source == 'trained' else 'cache'} {key[:4]}…, route epochs {list(epochs)}"
    return route, info
