"""Route-constrained optimisation: the anchor schedule, per-anchor cached logits, bad input,
the teacher's route in its cache entry, and resume on the right anchor."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from kdexp.data.fashion_mnist import FashionMNISTDataModule
from kdexp.methods import build_method, method_class
from kdexp.methods.rco import anchor_index, anchor_spans, equal_interval_anchors
from kdexp.models import BuiltModel, build_model
from kdexp.runner.performance import apply_performance
from kdexp.models.route import AnchorRoute

SGD = {"name": "sgd", "lr": 0.1}
NONE = {"name": "none"}
RCO = method_class("rco")


def test_equal_interval_anchors_end_at_the_converged_teacher() -> None:
    assert equal_interval_anchors(4, 4) == [1, 2, 3, 4]
    assert equal_interval_anchors(2, 4) == [2, 4]
    assert equal_interval_anchors(4, 240) == [60, 120, 180, 240]
    assert equal_interval_anchors(1, 7) == [7]


def test_student_epochs_are_split_into_equal_shares() -> None:
    assert [anchor_index(e, 4, 8) for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [anchor_index(e, 3, 5) for e in range(5)] == [0, 0, 1, 1, 2]
    assert anchor_spans(3, 5) == [(0, 1), (2, 3), (4, 4)]
    for n, epochs in ((4, 8), (3, 5), (2, 7), (5, 5)):
        spans = anchor_spans(n, epochs)
        for k, (first, last) in enumerate(spans):
            assert all(anchor_index(e, n, epochs) == k for e in range(first, last + 1))
        assert spans[0][0] == 0 and spans[-1][1] == epochs - 1


@pytest.mark.parametrize(
    ("hparams", "teacher", "epochs", "message"),
    [
        ({"anchors": []}, {}, 4, "non-empty list"),
        ({"anchors": [1, 9]}, {}, 4, r"epoch\(s\) \[9\] that the teacher never reached"),
        ({"anchors": [0, 2]}, {}, 4, "never reached"),
        ({"anchors": [3, 2]}, {}, 4, "strictly increasing"),
        ({"num_anchors": 5}, {}, 8, "from 1 to teacher.train.max_epochs=4"),
        ({"anchors": [1, 2, 4]}, {}, 2, "trainer.max_epochs=2"),
        ({"anchors": [1, 4]}, {"checkpoint": ["a.pt", "b.pt"]}, 4, "set method.anchors=null"),
        ({"schedule": "greedy"}, {}, 4, "not implemented"),
    ],
)
def test_bad_anchor_options_are_clear_errors(hparams, teacher, epochs, message) -> None:
    teacher_cfg = {"name": "cnn_small", "train": {"max_epochs": 4}, **teacher}
    with pytest.raises(ValueError, match=message):
        RCO.route_epochs(hparams, teacher_cfg, epochs)


def test_route_epochs_defaults() -> None:
    teacher_cfg = {"name": "cnn_small", "train": {"max_epochs": 4}}
    assert RCO.route_epochs({}, teacher_cfg, 8) == [1, 2, 3, 4]
    assert RCO.route_epochs({"num_anchors": 2}, teacher_cfg, 8) == [2, 4]
    assert RCO.route_epochs({}, {**teacher_cfg, "checkpoint": ["a.pt", "b.pt"]}, 2) == []
    assert method_class("kd").route_epochs({}, teacher_cfg, 8) is None


def route_teacher(n: int = 2) -> BuiltModel:
    anchors = []
    for k in range(n):
        torch.manual_seed(100 + k)
        anchors.append(build_model({"name": "cnn_tiny"}, 10, 1).module.eval().requires_grad_(False))
    return BuiltModel(AnchorRoute(anchors, [f"epoch {k + 1}" for k in range(n)], list(range(1, n + 1))),
                      "cnn_tiny", ("blocks.0",), "fc")


def test_switching_anchors_never_serves_the_previous_anchors_cached_logits(tiny_fashion_mnist, tmp_path) -> None:
    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), lean=True, batch_size=16)
    dm.setup("fit")
    module = build_method({"name": "rco"}, build_model({"name": "cnn_tiny"}, 10, 1), route_teacher(2),
                          10, (1, 28, 28), SGD, NONE)
    apply_performance(module, dm, {"teacher_cache": "auto"}, "rco", tmp_path)
    assert module.teacher_outputs is not None  # frozen anchors, logits only: the cache is exact
    x, y, views = dm.augment_batch(next(iter(dm.train_dataloader())))
    module.activate(0, 0)
    module._views = views
    first = module.teacher_logits(x)  # stored under anchor 0
    again = module.teacher_logits(x)  # served from anchor 0's table
    assert torch.equal(first, again) and module.teacher_outputs.hits == len(x)
    module.activate(1, 1)
    second = module.teacher_logits(x)
    module._views = None
    with torch.no_grad():
        expected = module.route.anchors[1](x)
        previous = module.route.anchors[0](x)
    assert torch.allclose(second, expected) and not torch.allclose(second, previous)
    assert module.teacher_outputs.hits == 0 and module.teacher_outputs.misses == len(x)
    assert module.cache_summaries[0]["hit_rate"] == 0.5


class AnchorLog(pl.Callback):
    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.seen[trainer.current_epoch] = module.route.active


def fit(tiny_root, tmp_path, max_epochs: int, ckpt_path=None, callbacks=()):
    pl.seed_everything(0)
    dm = FashionMNISTDataModule(root=str(tiny_root), lean=True, batch_size=16)
    dm.setup("fit")
    module = build_method({"name": "rco"}, build_model({"name": "cnn_tiny"}, 10, 1), route_teacher(3),
                          10, (1, 28, 28), SGD, NONE)
    apply_performance(module, dm, {"teacher_cache": "auto"}, "rco", tmp_path)
    log = AnchorLog()
    trainer = pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path),
        callbacks=[log, *callbacks],
    )
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return module, log


def test_anchors_switch_at_the_scheduled_epochs_and_resume_continues_on_the_right_one(tiny_fashion_mnist, tmp_path) -> None:
    _, log = fit(tiny_fashion_mnist, tmp_path / "full", 6)
    assert log.seen == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}
    # Interrupted after epoch 3 (0-based 2), resumed: epoch 3 is still anchor 1, then anchor 2.
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)

    class StopAfter(pl.Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            if trainer.current_epoch == 2:
                trainer.should_stop = True

    fit(tiny_fashion_mnist, tmp_path / "part", 6, callbacks=[saver, StopAfter()])
    module, log = fit(tiny_fashion_mnist, tmp_path / "resumed", 6, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert log.seen == {3: 1, 4: 2, 5: 2}
    assert module.switches[0] == {"student_epoch": 3, "anchor": 1}


COMMON = (
    "data.val_size=16", "data.batch_size=16", "teacher=cnn_small", "student=cnn_tiny",
    "teacher.train.max_epochs=4", "profile.enabled=false", "logger=none",
)


def test_rco_run_keeps_the_route_in_the_cache_and_reports_every_anchor(kdexp_run, tiny_fashion_mnist, tmp_path) -> None:
    cache = tmp_path / "cache"
    args = (f"data.root={tiny_fashion_mnist}", *COMMON, "method=rco", "method.num_anchors=2", "trainer.max_epochs=4")
    outcome = kdexp_run(*args, cache_dir=cache, run_dir=tmp_path / "run")
    assert outcome.exit_code == 0, outcome.message
    entries = sorted(p.name for p in cache.glob("*.pt"))
    assert len(entries) == 2 and any(".route-epoch2.pt" in n for n in entries)  # epoch 4 = the entry
    route_file = next(p for p in cache.glob("*.route-epoch2.pt"))
    blob = torch.load(route_file, weights_only=True)
    assert blob["meta"]["epoch"] == 2 and "sha256" in blob
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    rco = results["rco"]
    assert [a["teacher_epoch"] for a in rco["anchors"]] == [2, 4]
    assert [a["student_epochs"] for a in rco["anchors"]] == [[1, 2], [3, 4]]
    assert [s["student_epoch"] for s in rco["switches"]] == [0, 2]
    assert all(0 <= a["acc_top1"] <= 1 and "student_agreement_top1" in a for a in rco["anchors"])
    assert rco["anchors"][-1]["acc_top1"] == results["teacher"]["acc_top1"]  # the converged teacher
    # Each anchor had its own cache: one pass of misses, then hits, never the other anchor's rows.
    assert [a["teacher_cache"]["hit_rate"] for a in rco["anchors"]] == [0.5, 0.5]
    assert results["run"]["teacher_source"]["source"] == "trained"

    # A second run reuses the route; a corrupt route checkpoint is set aside and retrained.
    outcome = kdexp_run(*args, cache_dir=cache, run_dir=tmp_path / "again")
    assert outcome.exit_code == 0, outcome.message
    assert json.loads((tmp_path / "again" / "results.json").read_text())["run"]["teacher_source"]["source"] == "cache"
    route_file.write_bytes(route_file.read_bytes()[:100])
    (teacher_entry,) = [p for p in cache.glob("*.pt") if ".route-" not in p.name]
    teacher_bytes = teacher_entry.read_bytes()
    outcome = kdexp_run(*args, cache_dir=cache, run_dir=tmp_path / "third")
    assert outcome.exit_code == 0, outcome.message
    assert list(cache.glob("*.route-epoch2.pt.corrupt-*"))
    third = json.loads((tmp_path / "third" / "results.json").read_text())
    assert third["run"]["teacher_source"]["source"] == "trained"
    # Trained again for its route, the teacher is an entry of its own: the cached teacher that other
    # runs (kd, ...) use is never replaced by a second training, which is not bit-identical on a CPU.
    assert teacher_entry.read_bytes() == teacher_bytes
    routed = teacher_entry.with_name(teacher_entry.stem + ".routed.pt")
    assert routed.is_file() and routed.with_name(routed.stem + ".route-epoch2.pt").is_file()
    assert third["run"]["teacher_source"]["path"] == str(routed)


def test_rco_bad_anchors_fail_before_any_teacher_is_trained(kdexp_run, tiny_fashion_mnist, tmp_path) -> None:
    outcome = kdexp_run(f"data.root={tiny_fashion_mnist}", *COMMON, "method=rco", "method.anchors=[2,6]",
                        "trainer.max_epochs=2", cache_dir=tmp_path / "cache", run_dir=tmp_path / "run")
    assert outcome.exit_code == 2 and "never reached" in outcome.message
    assert not list((tmp_path / "cache").glob("*.pt"))
    outcome = kdexp_run(f"data.root={tiny_fashion_mnist}", *COMMON, "method=kd", "teacher.checkpoint=[a.pt,b.pt]",
                        "trainer.max_epochs=2", cache_dir=tmp_path / "cache", run_dir=tmp_path / "kd")
    assert outcome.exit_code == 2 and "method=kd takes one path" in outcome.message


def test_route_recorder_keeps_the_weights_at_the_end_of_each_named_epoch(tiny_fashion_mnist, tmp_path) -> None:
    from kdexp.teacher.route import RouteRecorder
    from kdexp.teacher.cache import train_teacher

    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), lean=True, batch_size=16)
    dm.setup("fit")
    teacher = build_model({"name": "cnn_tiny"}, 10, 1)
    recorder = RouteRecorder([1, 2])
    recipe = {"max_epochs": 2, "optimizer": SGD, "scheduler": NONE}
    train_teacher(teacher, dm, recipe, {"accelerator": "cpu"}, tmp_path, [recorder])
    final = teacher.module.state_dict()
    assert sorted(recorder.states) == [1, 2]
    assert all(torch.equal(recorder.states[2][k], final[k].cpu()) for k in final)
    assert not torch.equal(recorder.states[1]["fc.weight"], final["fc.weight"])


def test_teacher_checkpoint_list_gives_the_anchors_in_order(tmp_path) -> None:
    from types import SimpleNamespace

    from kdexp.teacher.route import provide_route
    from kdexp.teacher.cache import TeacherRequest

    paths = []
    for k in range(3):
        torch.manual_seed(k)
        path = tmp_path / f"t{k}.pt"
        torch.save(build_model({"name": "cnn_tiny"}, 10, 1).module.state_dict(), path)
        paths.append(str(path))
    arch = build_model({"name": "cnn_tiny"}, 10, 1)
    teacher, info = provide_route(TeacherRequest(arch, {"name": "cnn_tiny", "checkpoint": paths}, {}, SimpleNamespace(num_classes=10),
                                  {}, tmp_path / "cache", tmp_path / "log", route_epochs=[]))
    route = teacher.module
    assert route.labels == paths and info["route"] == paths and route.active == 2
    for k, path in enumerate(paths):
        assert torch.equal(route.anchors[k].fc.weight, torch.load(path)["fc.weight"])
        assert not any(p.requires_grad for p in route.anchors[k].parameters())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        provide_route(TeacherRequest(arch, {"name": "cnn_tiny", "checkpoint": [paths[0], str(tmp_path / "missing.pt")]}, {},
                      SimpleNamespace(num_classes=10), {}, tmp_path / "cache", tmp_path / "log", route_epochs=[]))


def test_debug_switches_that_would_cut_the_route_short_are_refused(tmp_path) -> None:
    from types import SimpleNamespace

    from kdexp.teacher.route import provide_route
    from kdexp.teacher.cache import TeacherRequest

    arch = build_model({"name": "cnn_tiny"}, 10, 1)
    with pytest.raises(ValueError, match="trainer.fast_dev_run"):
        provide_route(TeacherRequest(arch, {"name": "cnn_tiny", "train": {"max_epochs": 4}}, {}, SimpleNamespace(num_classes=10),
                      {"fast_dev_run": True}, tmp_path / "cache", tmp_path / "log", route_epochs=[2, 4]))
    assert not (tmp_path / "cache").exists()
