"""The later methods (crd, pkt, vid, cc, nst, ft, ab, fsp, dkd, dist, reviewkd) and
logit standardisation: they run on the benchmark's CIFAR pairs, the staged ones and CRD's memory
bank resume exactly, sample indices reach CRD from every data path, bad options fail early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import REPO, compose_config, make_method
from kdexp.data.fake import FakeDataModule
from kdexp.data.tensor import TensorDataModule
from kdexp.losses import (
    dist_inter_loss,
    dkd_nontarget_loss,
    dkd_target_loss,
    kd_loss,
    mutual_kl,
    standardize_logits,
)
from kdexp.methods import check_method_cfg
from kdexp.models import build_model

SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
CIFAR = (3, 32, 32)
NEW = ["crd", "pkt", "vid", "cc", "nst", "ft", "ab", "fsp", "dkd", "dist", "reviewkd"]
OWN_TERMS = {
    "crd": "crd", "pkt": "pkt", "vid": "vid", "cc": "cc", "nst": "nst", "ft": "ft_paraphraser",
    "ab": "ab", "fsp": "fsp", "dkd": "nckd", "dist": "dist_inter", "reviewkd": "reviewkd",
}
SMALL = {"crd": {"nce_negatives": 64}}  # the published 16,384 negatives are needless work on CPU
PAIRS = [("resnet32x4", "shufflenetv2"), ("vgg13", "mobilenetv2"), ("resnet56", "resnet20")]
# The other benchmark presets' pairs: the same code paths as the three above, so only in the slow run.
SLOW_PAIRS = [("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet110", "resnet32"),
              ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8")]


def build(method: str, teacher, student, shape=CIFAR, classes=10, **options):
    """``make_method`` on BuiltModels made by :func:`models` (seeded there)."""
    options = {**SMALL.get(method, {}), **options}
    return make_method(method, student, teacher, input_shape=shape, num_classes=classes, optimizer=SGD, seed=None, **options)


def models(teacher: str, student: str, classes: int = 10, channels: int = 3):
    torch.manual_seed(0)
    return build_model({"name": teacher}, classes, channels), build_model({"name": student}, classes, channels)


# --- every method, every kind of pair ---------------------------------------------------------------


@pytest.mark.parametrize(
    "teacher, student", PAIRS + [pytest.param(*pair, marks=pytest.mark.slow) for pair in SLOW_PAIRS]
)
def test_every_new_method_takes_a_step_on_benchmark_pairs(teacher: str, student: str) -> None:
    t, s = models(teacher, student)
    x, y = torch.randn(2, *CIFAR, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1])
    # FSP needs equal channel counts stage by stage: not cross-family, not wrn_40_2 -> wrn_40_1 (the
    # CRD table has no FSP entry for those either)
    fsp_na = teacher[:3] != student[:3] or student == "wrn_40_1"
    for method in NEW:
        if method == "fsp" and fsp_na:
            with pytest.raises(ValueError, match="equal channel counts"):
                build(method, t, s)
            continue
        module = build(method, t, s)
        if method == "crd":
            module._build_memory(16)
            module._views = torch.tensor([3, 12])  # the per-sample data path's (B,) indices
        logits, terms = module.training_losses(x, y)
        module._views = None
        assert logits.shape == (2, 10)
        assert OWN_TERMS[method] in terms, (method, list(terms))
        loss = sum(w * v for w, v in terms.values())
        assert torch.isfinite(loss), (method, terms)
        loss.backward()
        own = [p for name, p in module.named_parameters() if not name.startswith("student.")]
        trained = [p for p in own if p.grad is not None]
        if method == "ft":  # stage 1 trains the paraphraser only; the translator waits for stage 2
            assert all(p.grad is not None for p in module.paraphraser.parameters())
        elif own:
            assert len(trained) == len(own), f"{method}: connector parameters without gradient"
        module.zero_grad()
        s.module.zero_grad()


@pytest.mark.parametrize("method", ["pkt", "cc", "nst", "ab", "fsp", "dkd", "dist", "reviewkd"])
def test_own_loss_goes_down_in_a_short_run(method: str) -> None:
    """8 epochs over 16 fixed images (SGD 0.05): the method's own term falls to < 0.9 of its start.
    (VID's variance and CRD's bank move too slowly for so short a run to show it.)"""
    torch.manual_seed(0)
    t = build_model({"name": "cnn_small"}, 4, 1)
    s = build_model({"name": "cnn_small" if method == "fsp" else "cnn_tiny"}, 4, 1)  # FSP: equal channels
    options = {"init_epochs": 8} if method in ("ab", "fsp") else {"warmup_epochs": 0} if method in ("dkd", "reviewkd") else {}
    module = build(method, t, s, shape=(1, 28, 28), classes=4, **options)
    seen: list[tuple[int, float]] = []
    step = module.training_losses

    def recorded(x, y):
        logits, terms = step(x, y)
        seen.append((module.current_epoch, terms[OWN_TERMS[method]][1].item()))
        return logits, terms

    module.training_losses = recorded
    trainer(8).fit(module, datamodule=fake_data(16, shape=(1, 28, 28), batch=8))
    first = sum(v for e, v in seen if e == 0)
    last = sum(v for e, v in seen if e == 7)
    assert last < 0.9 * first, (method, first, last)


# --- sample indices and CRD's memory bank -----------------------------------------------------------


class TinyTensors(TensorDataModule):
    """A TensorDataModule of random uint8 images (both its lean and per-sample paths)."""

    name = "tiny"
    num_classes, input_shape = 4, (3, 16, 16)
    mean, std, pad = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 2

    def load_splits(self):
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (20, 3, 16, 16), generator=g, dtype=torch.uint8)
        return {"train": (images[:12], torch.arange(12) % 4), "test": (images[12:], torch.arange(8) % 4)}


def trainer(epochs: int, root: Path | None = None, **kwargs) -> pl.Trainer:
    callbacks = [pl.callbacks.ModelCheckpoint(dirpath=root, save_last=True, save_top_k=0)] if root else []
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=root is not None,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kwargs,
    )


def fake_data(n: int = 12, shape=(3, 16, 16), classes: int = 4, batch: int = 4) -> FakeDataModule:
    dm = FakeDataModule(image_shape=shape, num_classes=classes, train_size=n, test_size=4, batch_size=batch)
    dm.shuffle_seed = 0
    return dm


@pytest.mark.parametrize("data", ["fake", "tensor", "tensor_lean", "tensor_val", "tensor_lean_val"])
def test_crd_bank_is_filled_through_every_data_path(data: str) -> None:
    if data == "fake":
        dm = fake_data()
    else:
        dm = TinyTensors(batch_size=4, augment=True, lean="lean" in data, val_size=4 if "val" in data else 0)
        dm.shuffle_seed = 0
    t, s = models("resnet8", "resnet8", classes=4)
    module = build("crd", t, s, shape=(3, 16, 16), classes=4, nce_negatives=8)
    trainer(1).fit(module, datamodule=dm)
    memory = module.contrast
    train_rows = sorted(memory.rows.tolist())
    assert memory.memory_student.shape == (12, 128)  # one row per sample of the full training set
    assert memory.num_data == len(train_rows) == (8 if "val" in data else 12)
    seen = (memory.labels >= 0).nonzero().flatten().tolist()
    assert seen == train_rows  # every training sample was seen once, with its row; held-out rows never
    if data != "fake":  # the tensor datasets' labels are row % 4: the index is the row on both paths
        assert all(memory.labels[r] == r % 4 for r in train_rows)
    norms = memory.memory_student[memory.rows].norm(dim=1)
    assert torch.allclose(norms, torch.ones(len(train_rows)), atol=1e-5)  # updated rows renormalised
    assert (memory.normalizers > 0).all()
    negatives = memory.negatives(memory.rows[:2], memory.labels[memory.rows[:2]])
    assert set(negatives.flatten().tolist()) <= set(train_rows)  # never a held-out row


def test_fsp_flows_start_at_the_stem_as_repdistiller() -> None:
    t, s = models("resnet56", "resnet20")
    module = build("fsp", t, s)
    assert module.student_layers == module.teacher_layers == ["relu", "layer1", "layer2", "layer3"]
    assert [shape[1] for shape in module.feature_shapes[0]] == [16, 16, 32, 64]  # f0 ... f3
    t, s = models("wrn_40_2", "wrn_16_2")
    assert build("fsp", t, s).student_layers == ["conv1", "block1", "block2", "block3"]


def test_crd_negatives_avoid_the_anchor_and_its_known_class() -> None:
    from kdexp.connectors import ContrastMemory

    memory = ContrastMemory(8, 40, num_negatives=500)  # all 40 rows train
    memory.labels.copy_(torch.arange(40) % 4)
    index, labels = torch.tensor([0, 5]), torch.tensor([0, 1])
    neg = memory.negatives(index, labels)
    assert neg.shape == (2, 500)
    assert (memory.labels[neg] != labels[:, None]).all()
    assert not (neg == index[:, None]).any()


# --- exact resumption of the staged methods and of CRD's bank ----------------------------------------


@pytest.mark.parametrize("method, options", [("ab", {"init_epochs": 1}), ("fsp", {"init_epochs": 1}),
                                             ("ft", {"init_epochs": 1}), ("crd", {"nce_negatives": 8})])
def test_resumed_run_matches_the_uninterrupted_one(method: str, options: dict, tmp_path: Path) -> None:
    def fresh():
        t, s = models("resnet8", "resnet8", classes=4)
        return build(method, t, s, shape=(3, 16, 16), classes=4, **options)

    full = fresh()
    trainer(3).fit(full, datamodule=fake_data())
    first = fresh()
    trainer(1, tmp_path).fit(first, datamodule=fake_data())  # stops after stage 1 / epoch 1
    resumed = fresh()
    trainer(3).fit(resumed, datamodule=fake_data(), ckpt_path=str(tmp_path / "last.ckpt"))
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{method}: {key} differs after resume"
    if method in ("ab", "ft"):  # the stage-1 connectors are frozen in stage 2
        assert not any(p.requires_grad for p in resumed.regressors.parameters())


def test_crd_refuses_a_checkpoint_whose_bank_has_another_size(tmp_path: Path) -> None:
    t, s = models("resnet8", "resnet8", classes=4)
    trainer(1, tmp_path).fit(build("crd", t, s, shape=(3, 16, 16), classes=4, nce_negatives=8), datamodule=fake_data(12))
    t, s = models("resnet8", "resnet8", classes=4)
    module = build("crd", t, s, shape=(3, 16, 16), classes=4, nce_negatives=8)
    with pytest.raises(ValueError, match="memory bank has 12 rows .* for 12 training samples, but this run has 16 rows"):
        trainer(2).fit(module, datamodule=fake_data(16), ckpt_path=str(tmp_path / "last.ckpt"))


# --- bad options fail before any teacher work --------------------------------------------------------


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("crd", {"crd_weight": -1}, "method.crd_weight must be >= 0"),
        ("crd", {"feat_dim": 0}, "method.feat_dim must be an integer >= 1"),
        ("crd", {"nce_momentum": 1.0}, "method.nce_momentum"),
        ("cc", {"form": "taylor"}, "method.form must be one of"),
        ("dkd", {"warmup_epochs": -2}, "method.warmup_epochs"),
        ("dkd", {"nckd_weight": -8}, "method.nckd_weight must be >= 0"),
        ("ab", {"init_epochs": 1.5}, "method.init_epochs"),
        ("fsp", {"hint_weight": 3}, "method 'fsp' has no option"),
        ("ab", {"hint_epochs": 2}, "method 'ab' has no option"),  # FitNets' options are not AB's
        ("ft", {"regressor_relu": False}, "method 'ft' has no option"),
        ("ft", {"rate": 1.5}, "method.rate must be > 0 and <= 1"),
        ("crd", {"nce_temperature": 0}, "method.nce_temperature must be > 0"),
        ("reviewkd", {"max_mid_channels": 0}, "method.max_mid_channels must be an integer >= 1"),
        ("kd", {"logit_standardization": "yes"}, "method.logit_standardization must be true or false"),
    ],
)
def test_bad_options_fail_before_the_teacher(method: str, options: dict, match: str) -> None:
    t, s = models("resnet8", "resnet8")
    with pytest.raises(ValueError, match=match):
        cls, hparams = check_method_cfg({"name": method, **options})  # at config-check time ...
        cls.check_models(s, t, hparams)  # ... or on the bare architectures, before any teacher


# --- logit standardisation and the logit methods -----------------------------------------------------


def test_logit_standardization_reaches_every_logit_term() -> None:
    t, s = models("resnet8", "resnet8")
    x, y = torch.randn(4, *CIFAR, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3])
    s.module.eval(), t.module.eval()  # the logits the modules will see (BN running statistics)
    with torch.no_grad():
        z_t, z_s = t.module(x), s.module(x)
    zs_t, zs_s = standardize_logits(z_t), standardize_logits(z_s)
    for method, options, key, expected in [
        ("kd", {}, "kd", kd_loss(zs_s, zs_t, 4.0)),
        ("dkd", {}, "tckd", dkd_target_loss(zs_s, zs_t, y, 4.0)),
        ("dkd", {}, "nckd", dkd_nontarget_loss(zs_s, zs_t, y, 4.0)),
        ("dist", {}, "dist_inter", dist_inter_loss(zs_s, zs_t, 4.0)),
        ("born_again", {}, "kd", kd_loss(zs_s, zs_t, 1.0)),
        ("at", {"kd_weight": 0.9}, "kd", kd_loss(zs_s, zs_t, 4.0)),
    ]:
        module = build(method, t, s, logit_standardization=True, **options)
        _, terms = module.training_losses(x, y)
        assert terms[key][1].item() == pytest.approx(expected.item(), rel=1e-5), (method, key)
    plain = build("kd", t, s)
    assert plain.training_losses(x, y)[1]["kd"][1].item() == pytest.approx(kd_loss(z_s, z_t, 4.0).item(), rel=1e-5)


def test_dml_standardizes_its_cohort_logits() -> None:
    module = make_method("dml", "cnn_tiny", None, logit_standardization=True)
    module.eval()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    _, terms = module.training_losses(x, y)
    z = [standardize_logits(m(x)) for m in module.members]
    expected = mutual_kl(z[0], [z[1]]) + mutual_kl(z[1], [z[0]])
    assert terms["dml"][1].item() == pytest.approx(expected.item(), rel=1e-5)


def test_dkd_and_reviewkd_warm_up_linearly_over_20_epochs() -> None:
    t, s = models("resnet8", "resnet8")
    x, y = torch.randn(4, *CIFAR), torch.tensor([0, 1, 2, 3])
    for method, key, weight in [("dkd", "nckd", 8.0), ("reviewkd", "reviewkd", 5.0)]:
        module = build(method, t, s)
        for epoch, factor in [(0, 1 / 20), (9, 10 / 20), (19, 1.0), (100, 1.0)]:
            module.__dict__["current_epoch"] = epoch  # what Lightning reports in that epoch
            type(module).current_epoch = property(lambda m: m.__dict__.get("current_epoch", 0))
            assert module.training_losses(x, y)[1][key][0] == pytest.approx(weight * factor)


# --- configs, presets and the CLI ---------------------------------------------------------------------


def test_method_configs_match_the_class_defaults() -> None:
    t, s = models("cnn_small", "cnn_small", channels=1)
    for name in NEW:
        cfg = compose_config(f"method={name}")
        cls, options = check_method_cfg(dict(cfg.method))
        configured = make_method(name, s, t, seed=None, **options)  # the published settings, as built
        default = make_method(name, s, t, seed=None)
        assert configured.hparams["method"] == default.hparams["method"], name
    for pair in ["vgg13_mobilenetv2", "resnet32x4_shufflenetv2"]:  # the cross-family presets
        cfg = compose_config(f"experiment=cifar100_{pair}", "method=crd")
        assert cfg.optimizer.lr == 0.01 and cfg.trainer.max_epochs == 240 and cfg.data.name == "cifar100"
        assert cfg.teacher.train.optimizer.lr == 0.05  # the teacher keeps the benchmark recipe


def test_docs_give_a_row_per_new_method() -> None:
    docs = (REPO / "docs" / "benchmarks.md").read_text()
    for name in NEW:
        assert f"method={name}" in docs, name


@pytest.mark.slow  # a run that also trains a teacher: ~40 s on 2 CPU cores
def test_cli_runs_crd_on_fake_data(kdexp_run, tmp_path: Path) -> None:
    outcome = kdexp_run(
        "data=fake", "data.image_shape=[1,28,28]", "data.train_size=32", "data.test_size=16", "data.batch_size=16",
        "teacher=cnn_small", "student=cnn_tiny", "method=crd", "method.nce_negatives=64", "debug=fast",
        "profile.enabled=false",
        cache_dir=tmp_path / "cache",
        run_dir=tmp_path / "run",
    )
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["run"]["method"] == "crd"


@pytest.mark.slow  # two spawned gloo processes: ~30 s on 2 CPU cores
def test_crd_bank_stays_identical_across_ddp_ranks() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "crd_ddp_helper.py")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT same_bank=True seen=32 of 32" in proc.stdout, proc.stdout[-2000:]
