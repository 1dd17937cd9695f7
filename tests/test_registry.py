"""One registry for every pluggable kind, methods that declare their options, metric names, and
the teacher recipe that follows the data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, compose_config, make_method
from kdexp.data import DATASETS, build_datamodule
from kdexp.methods import METHODS, check_method_cfg, search_space
from kdexp.metric_names import accuracies, member_role, metric_name
from kdexp.models import available_models, build_model
from kdexp.optim import build_optimizer, build_scheduler
from kdexp.registry import Registry, UnknownName

PARAMS = [torch.zeros(1, requires_grad=True)]


# --- the registry ------------------------------------------------------------------------------
def test_registry_get_names_the_key_and_the_choices() -> None:
    things: Registry = Registry("thing")
    things.register("a")(lambda x=1: x)
    things.register("b")(lambda: 2)
    with pytest.raises(UnknownName, match=r"thing\.name='c' is unknown; choose one of: a, b") as err:
        things.get("c")
    assert (err.value.key, err.value.name, err.value.choices) == ("thing.name", "c", "a, b")
    with pytest.raises(ValueError, match="registered twice"):
        things.register("a")(int)
    assert things.build({"name": "a", "x": 5}) == 5
    with pytest.raises(ValueError, match=r"thing 'a' has no option thing\.y; it accepts: x"):
        things.build({"name": "a", "y": 5})


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "sgd", "lr": 0.1, "betas": [0.9, 0.99]}, "optimizer 'sgd' has no option optimizer.betas; it accepts: lr, momentum"),
        ({"name": "adamw", "lr": 0.1, "momentum": 0.9}, "optimizer 'adamw' has no option optimizer.momentum; it accepts: lr, weight_decay, betas"),
        ({"name": "rmsprop", "lr": 0.1}, "optimizer.name='rmsprop' is unknown; choose one of: sgd, adam, adamw"),
    ],
)
def test_optimizer_options_are_checked(cfg, message) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        build_optimizer(PARAMS, cfg)


def test_optimizer_options_reach_torch() -> None:
    opt = build_optimizer(PARAMS, {"name": "adamw", "lr": 0.01, "betas": [0.8, 0.9], "eps": 1e-6,
                                   "weight_decay": 0.05, "scale_lr_with_world_size": False})
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (0.01, (0.8, 0.9), 1e-6, 0.05)
    sgd = build_optimizer(PARAMS, {"name": "sgd", "lr": 0.1, "momentum": 0.5, "nesterov": True})
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["nesterov"]) == (0.5, True)


def test_scheduler_options_are_checked_and_reach_torch() -> None:
    opt = build_optimizer(PARAMS, {"name": "sgd", "lr": 0.1})
    sched = build_scheduler(opt, {"name": "multistep", "milestones": [2, 4], "gamma": 0.5}, 10, 100)
    assert sched["interval"] == "epoch" and sched["scheduler"].milestones == {2: 1, 4: 1}
    assert build_scheduler(opt, {"name": "none"}, 10, 100) is None
    with pytest.raises(ValueError, match=r"scheduler 'cosine' has no option scheduler\.gamma; it accepts: none"):
        build_scheduler(opt, {"name": "cosine", "gamma": 0.1}, 10, 100)


def test_data_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"data 'fake' has no option data\.colour; it accepts: image_shape, num_classes"):
        build_datamodule({"name": "fake", "colour": 1})
    # how batches are made is the run layer's (performance.*), never a data.* key
    with pytest.raises(ValueError, match=r"data 'fashion_mnist' has no option data\.lean"):
        build_datamodule({"name": "fashion_mnist", "lean": True})
    assert build_datamodule({"name": "fake", "train_size": 8}, lean=True).train_size == 8
    assert set(DATASETS.names()) >= {"fashion_mnist", "cifar10", "cifar100", "imagenet", "fake"}


def test_model_errors_name_the_choices() -> None:
    with pytest.raises(UnknownName, match=r"model\.name='resnet21' is unknown; choose one of: cnn_large"):
        build_model({"name": "resnet21"}, 10, 3)
    with pytest.raises(UnknownName, match=r"source='keras' is unknown; choose one of: kdexp, torchvision, timm"):
        build_model({"name": "resnet20", "source": "keras"}, 10, 3)


# --- methods declare themselves ----------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "kd", "temperature": 0}, "method.temperature must be > 0"),
        ({"name": "kd", "temperature": float("nan")}, "method.temperature must be a finite number"),
        ({"name": "kd", "ce_weight": "0.5"}, "method.ce_weight must be a finite number >= 0"),
        ({"name": "hints", "hint_epochs": 1.5}, "method.hint_epochs must be an integer >= 0"),
        ({"name": "hints", "regressor_relu": "yes"}, "method.regressor_relu must be true or false"),
        ({"name": "hints", "kd_weight_end": 0.5}, "method.kd_weight_end needs method.kd_weight > 0"),
        ({"name": "sp", "student_layers": "layer1"}, "method.student_layers must be a non-empty list"),
        ({"name": "dml", "cohort": ["cnn_tiny", "nope"]}, "method.cohort names unknown model(s) ['nope']"),
    ],
)
def test_method_options_are_checked_from_their_declaration(cfg, message) -> None:
    with pytest.raises(ValueError) as err:
        check_method_cfg(cfg)
    assert message in str(err.value)


def test_options_become_attributes_and_hparams() -> None:
    module = make_method("rkd", distance_weight=10, rkd_weight=2)
    assert (module.distance_weight, module.angle_weight, module.rkd_weight) == (10.0, 50.0, 2.0)
    assert isinstance(module.distance_weight, float)  # ints from yaml become floats
    assert module.hparams["method"]["distance_weight"] == 10.0
    assert module.hparams["method"]["student_layers"] is None  # what the config said
    assert module.student_layers == ["fc"]  # the resolved default: the classifier's input


def test_run_layer_reads_declarations_not_names() -> None:
    declared = {name: METHODS.get(name) for name in METHODS.names()}
    assert [n for n, c in declared.items() if c.chain and c.chain.plain] == ["born_again", "takd"]
    assert {n: c.chain.runner for n, c in declared.items() if c.chain and not c.chain.plain} == dict.fromkeys(
        ["finetune", "icarl", "joint", "lwf"], "incremental_steps")
    assert [n for n, c in declared.items() if c.teacher_use.trained_with_student] == [
        "apprentice_joint", "projection_joint", "rocket"]
    assert declared["takd"].chain_links({"assistants": ["cnn_small"]}) == [{"source": "kdexp", "name": "cnn_small"}, None]
    assert declared["rco"].route_epochs({"num_anchors": 2}, {"train": {"max_epochs": 4}}, 4) == [2, 4]
    assert declared["kd"].route_epochs({}, {"train": {"max_epochs": 4}}, 4) is None
    assert declared["born_again"].chain_links({"generations": 5}) == [None] * 5
    assert declared["born_again"].chain_links({}) == [None] * 3  # the declared default
    assert {n: c.members_field for n, c in declared.items() if c.members_field} == {
        "born_again": "generations", "dml": "cohort", "takd": "generations"}
    assert sorted(n for n, c in declared.items() if c.teacher_use.logits_only) == [  # apprentice_finetune: kd, quantised student
        "apprentice_finetune", "born_again", "dist", "dkd", "kd", "rco", "takd"]
    assert [n for n, c in declared.items() if c.needs_sample_indices] == ["crd"]
    assert search_space(declared["kd"].Options) == {
        "method.ce_weight": (0.0, 1.0), "method.kd_weight": (0.0, 1.0), "method.temperature": (1.0, 10.0)}


COMPARED = ("kd", "hints", "at", "sp", "rkd", "crd", "pkt", "vid", "cc", "nst", "ft", "ab", "fsp", "dkd", "dist",
            "reviewkd")  # the methods of the fair comparison (docs/comparison.md)
NOT_SEARCHED = {  # weights a search would only duplicate or that do not weigh a distillation term
    "rkd_weight": "β multiplies distance_weight and angle_weight, which are searched",
    "paraphraser_weight": "FT's stage-1 reconstruction loss, not the distillation term",
}


@pytest.mark.parametrize("name", COMPARED)
def test_every_compared_method_declares_a_search_range_around_its_published_weights(name) -> None:
    """hparams_search=auto tunes what a method declares: each loss weight of its own (not CE/KD, which
    the base declares) has a range, and the published default lies inside it."""
    import dataclasses

    options = METHODS.get(name).Options
    space = search_space(options)
    own = [f for f in dataclasses.fields(options)
           if f.name.endswith("_weight") and f.default not in (None, 0.0) and f.name not in NOT_SEARCHED]
    assert own, name
    for field in own:
        low, high, *scale = space[f"method.{field.name}"]
        assert low <= field.default <= high, (name, field.name)
        assert scale == ["log"] or low == 0.0, (name, field.name)


def test_dml_summarize_picks_the_best_member_on_validation() -> None:
    module = make_method("dml", teacher=None, cohort_size=3)
    results = {"run": {}, **{member_role(i): {"acc_top1": a} for i, a in enumerate([0.5, 0.6, 0.7])}}
    test = {metric_name("test", "ensemble"): 0.8}
    val = {metric_name("val", member_role(i)): v for i, v in enumerate([0.3, 0.9, 0.1])}
    module.summarize(results, test, val)
    assert results["ensemble"] == {"acc_top1": 0.8}
    assert results["run"]["best_student"] == "student1" and results["student"] == {"acc_top1": 0.6}
    assert results["run"]["cohort"] == ["student0", "student1", "student2"]


# --- metric names ------------------------------------------------------------------------------
def test_metric_names() -> None:
    assert metric_name("val") == "val/acc"
    assert metric_name("test", "student") == "test/student_acc"
    assert metric_name("val", member_role(2), "acc_top5") == "val/student2_acc_top5"
    assert metric_name("train", "kd", "loss") == "train/kd_loss"
    logged = {"test/student_acc": 0.5, "test/student_acc_top5": 0.9, "test/student1_acc": 0.1}
    assert accuracies(logged, "test", "student") == {"acc_top1": 0.5, "acc_top5": 0.9}


# --- configs: models from the registry, the recipe from the data -------------------------------
def test_no_twin_model_configs() -> None:
    """Image models come from the registry (the kdexp-models config source), never a second yaml; the
    files there are the other sources and the ranking task's models (their own registry, with options)."""
    from kdexp.ranking.models import RANKING_MODELS

    for role in ("teacher", "student"):
        files = {p.stem for p in (REPO / "configs" / role).glob("*.yaml")}
        assert files <= {"timm", "torchvision", *RANKING_MODELS.names()}, (role, files)
        assert not files & set(available_models()), (role, files & set(available_models()))


def test_any_registered_model_is_a_teacher_or_student_with_the_datas_recipe() -> None:
    cfg = compose_config("teacher=resnet20", "student=wrn_16_1")
    assert (cfg.teacher.source, cfg.teacher.name, cfg.student.name) == ("kdexp", "resnet20", "wrn_16_1")
    assert cfg.teacher.checkpoint is None and cfg.teacher.seed == 0
    fmnist = yaml.safe_load((REPO / "configs/teacher/recipe/fashion_mnist.yaml").read_text())
    assert cfg.teacher.train.max_epochs == fmnist["max_epochs"] == 4  # not the 240-epoch CIFAR recipe
    cifar = compose_config("data=cifar100", "teacher=cnn_large")
    assert cifar.teacher.train.max_epochs == 240 and cifar.teacher.train.optimizer.lr == 0.05
    chosen = compose_config("data=cifar100", "teacher/recipe@teacher.train=fashion_mnist")
    assert chosen.teacher.train.max_epochs == 4
    assert set(cfg.student) == {"source", "name"}
    assert sorted(p.stem for p in (REPO / "configs/data").glob("*.yaml")) == sorted(
        p.stem for p in (REPO / "configs/teacher/recipe").glob("*.yaml") if p.stem != "cifar")


def test_every_registered_model_composes() -> None:
    for name in available_models()[:3]:
        assert compose_config(f"teacher={name}", f"student={name}").teacher.name == name


def test_optimized_metric_defaults_to_validation() -> None:
    from kdexp.errors import SetupError
    from kdexp.train import optimized_value

    cfg = compose_config()
    assert cfg.optimized_metric == "student.val_acc_top1"
    results = {"run": {"epochs": 3}, "student": {"acc_top1": 0.9, "val_acc_top1": 0.8}, "teacher": {}}
    assert optimized_value(results, "student.val_acc_top1") == 0.8
    assert optimized_value(results, "student.acc_top1") == 0.9  # the test set, only when named
    with pytest.raises(SetupError, match=r"optimized_metric='student\.val_acc' is not a number.*student\.val_acc_top1"):
        optimized_value(results, "student.val_acc")
    with pytest.raises(SetupError, match="choose one of: run.epochs, student.acc_top1"):
        optimized_value({"run": {"epochs": 3}, "student": {"acc_top1": 0.9}}, "student.val_acc_top1")


def test_tiny_config_fixture(tiny_cfg, tmp_path: Path) -> None:
    assert tiny_cfg.data.name == "fake" and tiny_cfg.trainer.max_epochs == 1
    assert tiny_cfg.paths.output_dir == str(tmp_path / "run")


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.betas=[0.9,0.99]", "optimizer.betas: optimizer 'sgd' has no option 'betas'; it accepts: lr, momentum"),
        ("+data.colour=1", "data 'fashion_mnist' has no option data.colour; it accepts: root"),
    ],
)
def test_an_option_the_target_does_not_take_is_refused_on_the_command_line(kdexp_run, tmp_path, override, message):
    """With or without ``+``, a key the optimizer or dataset does not take: exit 2, the key and the
    accepted ones named, no traceback (Hydra's own refusal would exit 1)."""
    outcome = kdexp_run("optimizer=sgd", override, cache_dir=tmp_path / "cache", run_dir=tmp_path / "run")
    assert outcome.exit_code == 2, outcome.message
    assert message in outcome.message and "Traceback" not in outcome.message + outcome.output
