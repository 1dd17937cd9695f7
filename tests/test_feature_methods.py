"""Feature-based methods (hints, at, sp, rkd): their losses train, layers are checked, configs compose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader, TensorDataset

from conftest import REPO, compose_config, make_method
from kdexp.methods import check_method_cfg
from kdexp.models import build_model

SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
TINY = (1, 28, 28)
OWN_LOSSES = {"hints": ["hint"], "at": ["at"], "sp": ["sp"], "rkd": ["rkd_distance", "rkd_angle"]}
PAIRS = [
    ("resnet56", "resnet20"),
    ("resnet110", "resnet32"),
    ("resnet32x4", "resnet8x4"),
    ("wrn_40_2", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"),
    ("vgg13", "vgg8"),
]


def make(method: str, teacher="cnn_small", student="cnn_tiny", shape=TINY, classes=10, **options):
    module = make_method(method, student, teacher, input_shape=shape, num_classes=classes, optimizer=SGD, **options)
    return module, module.teacher, module.student


def record_terms(module) -> list[dict]:
    """Wrap ``training_losses`` to record, per step, the epoch and each term's (weight, raw value)."""
    steps: list[dict] = []
    original = module.training_losses

    def recorded(x, y):
        logits, terms = original(x, y)
        steps.append(
            {"epoch": module.current_epoch, "terms": {k: (w, v.item()) for k, (w, v) in terms.items()}}
        )
        return logits, terms

    module.training_losses = recorded
    return steps


def fit(module, epochs: int, callbacks=(), n: int = 32, batch: int = 16) -> pl.Trainer:
    """Train on a small fixed synthetic dataset (fixed batches, no shuffling) on the CPU."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *module.input_shape, generator=g)
    y = torch.randint(0, module.hparams["num_classes"], (n,), generator=g)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=batch))
    return trainer


# --- each method's own loss goes down -------------------------------------------------------------


@pytest.mark.parametrize("method", ["hints", "at", "sp", "rkd"])
def test_method_loss_goes_down_in_a_short_run(method: str) -> None:
    module, _, _ = make(method)  # the published default weights
    steps = record_terms(module)
    trainer = fit(module, epochs=8)
    assert len(steps) == 16
    for name in OWN_LOSSES[method]:
        values = [s["terms"][name][1] for s in steps]
        first, last = sum(values[:4]) / 4, sum(values[-4:]) / 4
        assert last < 0.8 * first, (name, values)
        assert f"train/{name}_loss" in trainer.callback_metrics  # logged under its own name
    assert {"train/loss", "train/ce_loss"} <= set(trainer.callback_metrics)


def test_published_defaults() -> None:
    hints, _, _ = make("hints")
    assert (hints.hint_weight, hints.hint_epochs, hints.ce_weight, hints.kd_weight) == (100, 0, 1, 0)
    assert hints.student_layers == ["blocks.1"] and hints.teacher_layers == ["blocks.1"]
    at, _, _ = make("at")
    assert (at.at_weight, at.p, at.ce_weight, at.kd_weight) == (1000, 2, 1, 0)
    assert at.student_layers == ["blocks.0", "blocks.1", "blocks.2"]
    sp, _, _ = make("sp")
    assert (sp.sp_weight, sp.ce_weight, sp.kd_weight) == (3000, 1, 0)
    assert sp.student_layers == ["blocks.2"]
    rkd, _, _ = make("rkd")
    assert (rkd.distance_weight, rkd.angle_weight, rkd.rkd_weight, rkd.ce_weight) == (25, 50, 1, 1)
    assert rkd.student_layers == ["fc"] and rkd.feature_shapes == ([(2, 32)], [(2, 64)])  # fc's input


def test_kd_term_can_be_added() -> None:
    module, _, _ = make("at", kd_weight=0.9, temperature=4)
    module.train()
    _, terms = module.training_losses(torch.randn(4, *TINY), torch.tensor([0, 1, 2, 3]))
    assert set(terms) == {"ce", "kd", "at"} and terms["kd"][0] == 0.9


# --- layers: chosen, checked, paired --------------------------------------------------------------


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_bad_layer_path_fails_in_init_naming_available_paths(role: str) -> None:
    with pytest.raises(ValueError, match=rf"method\.{role}_layers.*\['layer9'\].*available paths.*blocks\.1"):
        make("at", **{f"{role}_layers": ["layer9"]})


def test_layer_lists_must_pair_up() -> None:
    with pytest.raises(ValueError, match=r"2 path\(s\).*1 .*same length"):
        make("at", student_layers=["blocks.1", "blocks.2"], teacher_layers=["blocks.2"])


def test_layers_are_configurable_and_regressor_bridges_shapes() -> None:
    module, _, _ = make("hints", student_layers=["blocks.2"], teacher_layers=["blocks.0"])
    (reg,) = module.regressors
    assert reg.student_shape == (32, 7, 7) and reg.teacher_shape == (16, 28, 28)
    module.train()
    _, terms = module.training_losses(torch.randn(4, *TINY), torch.tensor([0, 1, 2, 3]))
    assert terms["hint"][1].ndim == 0


def test_hints_needs_feature_maps() -> None:
    with pytest.raises(ValueError, match="4-D feature maps"):
        make("hints", student_layers=["fc"], teacher_layers=["fc"])


@pytest.mark.parametrize("method", ["hints", "at", "sp", "rkd"])
def test_every_trainable_parameter_gets_a_gradient_and_no_hooks_survive(method: str) -> None:
    module, teacher, student = make(method)
    module.train()
    _, terms = module.training_losses(torch.randn(4, *TINY), torch.tensor([0, 1, 2, 3]))
    sum(w * v for w, v in terms.values()).backward()
    # DDP-safe: every parameter in the optimizer (student and regressors) has a gradient.
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # Hooks exist only during the step; no features are kept.
    for model in (student, teacher):
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert module._current is None


def test_layers_are_checked_without_a_forward() -> None:
    from kdexp.methods.at import AttentionTransferModule
    from kdexp.methods.rkd import RelationalKDModule

    teacher, student = build_model({"name": "resnet8"}, 10, 3), build_model({"name": "cnn_tiny"}, 10, 3)
    assert AttentionTransferModule.resolve_layers(student, teacher) == (
        (["blocks.0", "blocks.1", "blocks.2"], False),
        (["layer1", "layer2", "layer3"], False),
    )
    assert RelationalKDModule.resolve_layers(student, teacher) == ((["fc"], True), (["fc"], True))
    with pytest.raises(ValueError, match=r"method\.teacher_layers.*\['layer4'\].*available"):
        AttentionTransferModule.resolve_layers(student, teacher, teacher_layers=["layer4"])


def test_regressor_is_in_optimizer_and_checkpoint_teacher_is_not() -> None:
    module, teacher, student = make("hints")
    trainer = fit(module, epochs=1, n=16)
    in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in module.regressors.parameters()} <= in_optimizer
    assert {id(p) for p in student.parameters()} <= in_optimizer
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    keys = module.state_dict().keys()
    assert any(k.startswith("regressors.0.conv") for k in keys)
    assert not any(k.startswith("teacher") for k in keys)


# --- teacher and student of different families -----------------------------------------------------

CIFAR = (3, 32, 32)
TORCHVISION_RESNET18 = {"source": "torchvision", "name": "resnet18"}


@pytest.mark.parametrize(
    "method, options",
    [
        ("hints", {}),  # layer2 (32x16x16) <- resnet18 layer2 (128x4x4): a transposed-conv regressor
        ("at", {"student_layers": ["layer2", "layer3", "layer4"]}),  # 3 registered stages vs 4
        ("sp", {}),
        ("rkd", {}),  # classifier inputs: 64-d vs 512-d
    ],
)
def test_cifar_resnet_teacher_with_torchvision_student(method: str, options: dict) -> None:
    module, _, student = make(method, "resnet8", TORCHVISION_RESNET18, CIFAR, **options)
    module.train()
    _, terms = module.training_losses(torch.randn(4, *CIFAR), torch.tensor([0, 1, 2, 3]))
    sum(w * v for w, v in terms.values()).backward()
    for name in OWN_LOSSES[method]:
        assert torch.isfinite(terms[name][1])
    assert all(p.grad is not None for p in student.parameters())


def test_torchvision_teacher_with_registered_student() -> None:
    module, _, _ = make("hints", TORCHVISION_RESNET18, "resnet8", CIFAR)
    (reg,) = module.regressors
    assert reg.student_shape == (32, 16, 16) and reg.teacher_shape == (128, 4, 4)


def test_unequal_default_stage_counts_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"same length.*declares stages"):
        make("at", "resnet8", TORCHVISION_RESNET18, CIFAR)


# --- FitNets' two stages ---------------------------------------------------------------------------


class Snapshots(pl.Callback):
    """Copies of chosen parameters at the start of every epoch, and once at the end."""

    def __init__(self, paths: list[str]) -> None:
        self.paths, self.at = paths, []

    def _take(self, module) -> dict:
        params = dict(module.named_parameters())
        return {p: params[p].detach().clone() for p in self.paths}

    def on_train_epoch_start(self, trainer, module) -> None:
        self.at.append(self._take(module))

    def on_train_end(self, trainer, module) -> None:
        self.at.append(self._take(module))


def test_two_stage_hints_switch_loss_at_hint_epochs() -> None:
    module, _, _ = make("hints", hint_epochs=2, kd_weight=0.5, kd_weight_end=0.1, temperature=3)
    steps = record_terms(module)
    guided, after, head = "student.blocks.0.0.weight", "student.blocks.2.1.weight", "student.fc.weight"
    snaps = Snapshots([guided, after, head, "regressors.0.conv.weight"])
    fit(module, epochs=4, callbacks=[snaps])
    stage1 = [s["terms"] for s in steps if s["epoch"] < 2]
    stage2 = [s["terms"] for s in steps if s["epoch"] >= 2]
    assert len(stage1) == len(stage2) == 4
    # Stage 1: the hint loss alone (CE logged with weight 0); stage 2: CE + KD, no hint.
    assert all(set(t) == {"hint", "ce"} and t["ce"][0] == 0.0 and t["hint"][0] == 100 for t in stage1)
    assert all(set(t) == {"ce", "kd"} and t["ce"][0] == 1 for t in stage2)
    # The KD weight decays linearly over the KD stage (epochs 2 and 3 of 4).
    assert [t["kd"][0] for t in stage2] == pytest.approx([0.5, 0.5, 0.1, 0.1])
    start, switch, end = snaps.at[0], snaps.at[2], snaps.at[-1]
    # Stage 1 trains the layers up to the guided one and the regressor, nothing after it.
    assert not torch.equal(start[guided], switch[guided])
    assert not torch.equal(start["regressors.0.conv.weight"], switch["regressors.0.conv.weight"])
    assert torch.equal(start[after], switch[after]) and torch.equal(start[head], switch[head])
    # Stage 2 trains the whole student; the regressor is frozen.
    assert not torch.equal(switch[head], end[head]) and not torch.equal(switch[after], end[after])
    assert torch.equal(switch["regressors.0.conv.weight"], end["regressors.0.conv.weight"])
    assert not any(p.requires_grad for p in module.regressors.parameters())


def test_hint_epochs_must_be_a_non_negative_integer() -> None:
    with pytest.raises(ValueError, match="method.hint_epochs"):
        make("hints", hint_epochs=-1)


# --- configs: methods, experiments, the CLI --------------------------------------------------------

CONFIG_DIR = str(REPO / "configs")
METHOD_CONFIGS = ["hints", "hints_two_stage", "at", "sp", "rkd"]


def test_method_configs_match_the_class_defaults() -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name in METHOD_CONFIGS:
            cfg = compose(config_name="train", overrides=[f"method={name}"])
            cls, options = check_method_cfg(dict(cfg.method))
            if name == "hints_two_stage":
                assert options["hint_epochs"] == 30 and options["temperature"] == 3
                continue
            module, _, _ = make(cfg.method.name, **options)
            defaults, _, _ = make(cfg.method.name)
            assert module.hparams["method"] == defaults.hparams["method"], name


def test_experiments_compose_with_the_benchmark_recipe() -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for teacher, student in PAIRS:
            for method in METHOD_CONFIGS + ["kd", "vanilla"]:
                cfg = compose(
                    config_name="train",
                    overrides=[f"experiment=cifar100_{teacher}_{student}", f"method={method}"],
                )
                check_method_cfg(dict(cfg.method))
                assert (cfg.teacher.name, cfg.student.name, cfg.data.name) == (teacher, student, "cifar100")
                assert cfg.trainer.max_epochs == 240 and cfg.data.batch_size == 64
                opt = cfg.optimizer
                assert (opt.name, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == (
                    "sgd", 0.05, 0.9, False, 5e-4
                )
                assert cfg.scheduler.name == "multistep"
                assert list(cfg.scheduler.milestones) == [150, 180, 210] and cfg.scheduler.gamma == 0.1
                assert cfg.teacher.train.max_epochs == 240 and cfg.teacher.train.optimizer.lr == 0.05


@pytest.mark.parametrize("teacher, student", PAIRS)
def test_benchmark_pairs_build_every_method_with_its_default_layers(teacher: str, student: str) -> None:
    torch.manual_seed(0)
    t = build_model({"name": teacher}, 100, 3)
    s = build_model({"name": student}, 100, 3)
    for method in ["hints", "at", "sp", "rkd"]:
        module = make_method(method, s, t, input_shape=CIFAR, num_classes=100, seed=None)
        assert len(module.student_layers) == len(module.teacher_layers) >= 1
    assert module.student_layers == [s.classifier]  # rkd: the classifier's input


def test_docs_list_every_experiment() -> None:
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    for teacher, student in PAIRS:
        assert f"experiment=cifar100_{teacher}_{student}" in docs


def test_cli_runs_at_on_fake_data(kdexp_run, shared_cache, tmp_path: Path) -> None:
    outcome = kdexp_run(
        "data=fake",
        "data.image_shape=[1,28,28]",
        "data.train_size=32",
        "data.test_size=16",
        "data.batch_size=16",
        "teacher=cnn_small",
        "student=cnn_tiny",
        "method=at",
        "debug=fast",
        "profile.enabled=false",
        cache_dir=shared_cache,
        run_dir=tmp_path / "run",
    )
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["run"]["method"] == "at" and results["run"]["student"] == "cnn_tiny"


def test_cli_prints_an_experiment_config() -> None:
    """What ``kdexp experiment=... method=at --cfg job`` prints: the composed job config as YAML."""
    from omegaconf import OmegaConf

    printed = OmegaConf.to_yaml(compose_config("experiment=cifar100_resnet56_resnet20", "method=at"))
    assert "name: resnet56" in printed and "at_weight: 1000" in printed
