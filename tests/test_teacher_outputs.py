"""The teacher-output cache: exact where it is on, never another view's logits, on only where exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from kdexp.data.fashion_mnist import FashionMNISTDataModule
from kdexp.data.tensor import ViewGrid, crop_flip
from kdexp.losses import kd_loss
from conftest import make_method
from kdexp.models import build_model
from kdexp.runner.performance import apply_performance
from kdexp.teacher.outputs import TeacherOutputCache, build_cache, resolve_cache

SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False}
GRID = ViewGrid(num_samples=6, positions=3, flips=2)  # pad 1: 3 x 3 offsets x 2 flips


def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model({"name": "cnn_tiny"}, 10, 1).module.eval().requires_grad_(False)
    with torch.no_grad():  # non-trivial running statistics: eval-mode BN is part of the forward
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def views_of(images: torch.Tensor, views: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """The images the views name (crop offsets and flips of rows of ``images``)."""
    index, dy, dx, flip = views.unbind(1)
    return crop_flip(images[index], dy, dx, flip, pad).float() / 255


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (GRID.num_samples, 1, 12, 12), dtype=torch.uint8)


def forward_counter(model):
    calls = []

    @torch.no_grad()
    def forward(x):
        calls.append(len(x))
        return model(x)

    return forward, calls


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_cached_kd_loss_equals_online_on_the_same_views(images, tmp_path, storage) -> None:
    model = teacher()
    cache = TeacherOutputCache(GRID, 10, storage=storage, path=tmp_path / "t.bin")
    forward, calls = forward_counter(model)
    views = torch.tensor([[0, 0, 0, 0], [1, 2, 1, 1], [2, 1, 1, 0], [5, 0, 2, 1]])
    x = views_of(images, views)
    student = torch.randn(4, 10, requires_grad=True)
    online = model(x)
    first = cache.logits(x, views, forward)  # all misses: one forward of the whole batch
    second = cache.logits(x, views, forward)  # all hits: no forward at all
    assert calls == [4]
    assert torch.equal(first, online) and torch.equal(second, online)
    assert torch.equal(kd_loss(student, second, 4.0), kd_loss(student, online, 4.0))
    assert cache.summary()["hit_rate"] == 0.5
    if storage == "disk":
        assert (tmp_path / "t.bin").is_file()
        cache.release()
        assert not (tmp_path / "t.bin").exists()


def test_partial_hits_compute_only_the_new_views(images) -> None:
    model = teacher()
    cache = TeacherOutputCache(GRID, 10)
    forward, calls = forward_counter(model)
    seen = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])
    cache.logits(views_of(images, seen), seen, forward)
    mixed = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [0, 0, 0, 0], [3, 2, 2, 1]])
    x = views_of(images, mixed)
    out = cache.logits(x, mixed, forward)
    assert calls == [2, 2]  # the two views not seen before
    for i in range(4):  # every row is that view's own teacher output (one-image forwards)
        assert torch.allclose(out[i], model(x[i : i + 1])[0], atol=1e-5)


def test_a_view_never_gets_another_views_logits(images) -> None:
    model = teacher()
    cache = TeacherOutputCache(GRID, 10)
    forward, _ = forward_counter(model)
    # Every view of sample 2 (and of sample 3), computed one at a time, then served in one batch.
    all_views = torch.tensor(
        [[s, dy, dx, f] for s in (2, 3) for dy in range(3) for dx in range(3) for f in range(2)]
    )
    x = views_of(images, all_views)
    for i in range(len(all_views)):
        cache.logits(x[i : i + 1], all_views[i : i + 1], forward)
    served = cache.logits(x, all_views, forward)
    expected = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(served, expected)
    assert len({tuple(row) for row in served.tolist()}) == len(all_views)  # 36 distinct outputs
    # Images that are not the views the batch names are refused, not served stale logits.
    flipped = all_views.clone()
    flipped[:, 3] = 1 - flipped[:, 3]
    with pytest.raises(RuntimeError, match="do not match the views"):
        cache.logits(x, flipped, forward)
    with pytest.raises(ValueError, match="outside the cache's grid"):
        cache.logits(x[:1], torch.tensor([[0, 3, 0, 0]]), forward)


def test_half_precision_storage_is_close_and_keeps_the_teachers_dtype(images) -> None:
    model = teacher()
    cache = TeacherOutputCache(GRID, 10, dtype=torch.bfloat16)
    forward, _ = forward_counter(model)
    views = torch.tensor([[0, 0, 0, 0], [4, 2, 2, 1]])
    x = views_of(images, views)
    cache.logits(x, views, forward)
    served = cache.logits(x, views, forward)
    assert served.dtype == torch.float32
    assert torch.allclose(served, model(x), rtol=1e-2, atol=1e-2)


def test_build_cache_options(tmp_path) -> None:
    small = build_cache({}, GRID, 10, tmp_path)
    assert small.storage == "memory" and small.dtype == torch.float32
    big = build_cache({"teacher_cache_memory_limit_gb": 1e-9}, GRID, 10, tmp_path)
    assert big.storage == "disk" and big.path.parent == tmp_path / "teacher_outputs"
    assert build_cache({"teacher_cache_dtype": "float16"}, GRID, 10, tmp_path).dtype == torch.float16
    with pytest.raises(ValueError, match="teacher_cache_dtype"):
        build_cache({"teacher_cache_dtype": "int8"}, GRID, 10, tmp_path)


def test_auto_is_on_only_where_exact_and_on_fails_loudly() -> None:
    t = teacher()
    assert resolve_cache({}, "kd", True, t, GRID, "fashion_mnist")
    assert not resolve_cache({"teacher_cache": "off"}, "kd", True, t, GRID, "fashion_mnist")
    assert not resolve_cache({"teacher_cache": False}, "kd", True, t, GRID, "fashion_mnist")
    assert not resolve_cache({}, "hints", False, t, GRID, "fashion_mnist")
    assert not resolve_cache({}, "kd", True, t, None, "fake")
    with pytest.raises(ValueError, match="method 'hints' uses the teacher's features"):
        resolve_cache({"teacher_cache": "on"}, "hints", False, t, GRID, "fashion_mnist")
    with pytest.raises(ValueError, match="data 'fake' does not name the view"):
        resolve_cache({"teacher_cache": True}, "kd", True, t, None, "fake")
    with pytest.raises(ValueError, match="auto, on, off"):
        resolve_cache({"teacher_cache": "sometimes"}, "kd", True, t, GRID, "fashion_mnist")


@pytest.mark.parametrize(
    "method, expected", [("kd", True), ("born_again", True), ("hints", False), ("at", False),
                         ("sp", False), ("rkd", False), ("dml", False)]
)
def test_methods_that_get_the_cache(tiny_fashion_mnist, tmp_path, method, expected) -> None:
    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), lean=True, batch_size=16)
    dm.setup("fit")
    t = build_model({"name": "cnn_small"}, 10, 1)
    t.module.eval().requires_grad_(False)
    s = build_model({"name": "cnn_tiny"}, 10, 1)
    options = {"kd_weight": 1.0} if method == "dml" else {}
    module = make_method(method, s, t, optimizer=SGD, seed=None, **options)
    apply_performance(module, dm, {"teacher_cache": "auto"}, method, tmp_path)
    assert (module.teacher_outputs is not None) == expected


def test_kd_training_with_the_cache_matches_online_training(tiny_fashion_mnist, tmp_path) -> None:
    """Two epochs of KD, cache on vs off, same seed and data order: the same student weights,
    and the second epoch served entirely from the cache."""

    def fit(cache: str):
        pl.seed_everything(0)
        dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), lean=True, batch_size=16)
        dm.setup("fit")
        t = build_model({"name": "cnn_small"}, 10, 1)
        t.module.eval().requires_grad_(False)
        s = build_model({"name": "cnn_tiny"}, 10, 1)
        module = make_method("kd", s, t, optimizer=SGD, seed=None)
        apply_performance(module, dm, {"teacher_cache": cache}, "kd", tmp_path)
        calls = []
        original = module.teacher_forward
        module.teacher_forward = lambda x: calls.append(len(x)) or original(x)
        trainer = pl.Trainer(
            max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        )
        trainer.fit(module, dm)
        return module, calls

    cached, cached_calls = fit("on")
    online, online_calls = fit("off")
    assert sum(cached_calls) == 64 and sum(online_calls) == 128  # one epoch of teacher work saved
    assert cached.teacher_outputs.summary()["hit_rate"] == 0.5
    for a, b in zip(cached.student.state_dict().values(), online.student.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_cli_reports_the_cache_and_refuses_on_where_inexact(kdexp_run, tiny_fashion_mnist, tmp_path) -> None:
    common = (
        f"data.root={tiny_fashion_mnist}", "data.val_size=16", "data.batch_size=16",
        "teacher=cnn_small", "student=cnn_tiny", "trainer.max_epochs=2", "teacher.train.max_epochs=1",
        "profile.enabled=false", "logger=none",
    )
    bad = kdexp_run(*common, "method=at", "performance.teacher_cache=on",
                    cache_dir=tmp_path / "cache", run_dir=tmp_path / "bad")
    assert bad.exit_code == 2 and "performance.teacher_cache=on" in bad.message
    assert not list((tmp_path / "cache").glob("*.pt"))  # refused before training a teacher
    ok = kdexp_run(*common, cache_dir=tmp_path / "cache", run_dir=tmp_path / "ok")
    assert ok.exit_code == 0, ok.message
    summary = json.loads((tmp_path / "ok" / "results.json").read_text())["run"]["teacher_cache"]
    assert summary["views_per_sample"] == 1 and summary["hit_rate"] == 0.5


def test_channels_last_switch_converts_both_models(tiny_fashion_mnist, tmp_path) -> None:
    dm = FashionMNISTDataModule(root=str(tiny_fashion_mnist), lean=True, batch_size=16)
    dm.setup("fit")
    t = build_model({"name": "cnn_small"}, 10, 1)
    t.module.eval().requires_grad_(False)
    module = make_method("kd", build_model({"name": "cnn_tiny"}, 10, 1), t, optimizer=SGD, seed=None)
    apply_performance(module, dm, {"channels_last": True, "teacher_cache": "off"}, "kd", tmp_path)
    conv = lambda m: next(p for p in m.parameters() if p.ndim == 4)  # noqa: E731
    assert conv(module.student).is_contiguous(memory_format=torch.channels_last)
    assert conv(module.teacher).is_contiguous(memory_format=torch.channels_last)
    assert module.teacher_outputs is None


# --- round 3, item 1: stored teacher outputs are keyed by the data they were computed on --------------
def other_fashion_mnist(root: Path) -> Path:
    """A folder the size of ``tiny_fashion_mnist`` (64 train, 32 test) with other images and labels."""
    import numpy as np

    from conftest import write_idx

    rng = np.random.default_rng(1)
    root.mkdir()
    for split, n, shift in (("train", 64, 3), ("t10k", 32, 0)):
        labels = (np.arange(n) + shift) % 10  # the test labels are the first folder's: only the images differ
        images = rng.integers(0, 50, size=(n, 28, 28))
        images[np.arange(n), 2 * ((labels + 5) % 10) + 4, :] = 255  # the first folder's teacher gets these wrong
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def test_stored_outputs_follow_the_data_not_its_size(tmp_path, tiny_fashion_mnist, caplog) -> None:
    """A run on a second folder of the same size, after a run on the first, computes its own teacher
    outputs (no "data-path bug", no first-folder numbers) and reports what the live teacher gives;
    stored files swapped by hand are detected and computed again, never served."""
    import copy
    import logging

    from omegaconf import open_dict

    from conftest import TINY_RUN, compose_config
    from kdexp.runner.experiment import run_experiment

    second_folder = other_fashion_mnist(tmp_path / "other")
    overrides = [o for o in TINY_RUN if not o.startswith("data")]
    base = compose_config(*overrides, "data=fashion_mnist", "data.val_size=16", "data.batch_size=16", "method=kd",
                          "logger=none", "profile.enabled=false", "trainer.max_epochs=2", "teacher.train.max_epochs=4")
    with open_dict(base):  # a teacher that learns something in 12 steps
        base.teacher.train.scheduler = {"name": "none"}

    def run(name: str, root: Path, **performance):
        cfg = copy.deepcopy(base)
        with open_dict(cfg):
            cfg.data.root = str(root)
            cfg.paths = {"root_dir": str(tmp_path), "data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"),
                         "log_dir": str(tmp_path / "outputs"), "output_dir": str(tmp_path / name)}
            cfg.performance.update(performance)
        run_experiment(cfg)
        results = json.loads((tmp_path / name / "results.json").read_text())
        return results["teacher"]["acc_top1"], results["comparison"]["agreement_top1"], results["student"]["acc_top1"]

    first = run("first", tiny_fashion_mnist)  # trains the teacher, stores its outputs on the first folder
    live = run("live", second_folder, teacher_cache="off", teacher_test_logits=False, teacher_train_logits=False)
    assert live[:2] != first[:2]  # the folders differ for this teacher: a first-folder answer would show
    assert run("cache_off", second_folder, teacher_cache="off") == live  # its own test logits, not the first folder's
    assert run("second", second_folder) == live  # its own training logits too (no "data-path bug")
    stores = {name: sorted((tmp_path / "cache" / name).glob("*.pt")) for name in ("teacher_test_logits", "teacher_train_logits")}
    assert all(len(files) == 2 for files in stores.values())  # one entry per folder

    for a, b in stores.values():  # swap each store's two entries by hand
        a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
        a.write_bytes(b_bytes)
        b.write_bytes(a_bytes)
    with caplog.at_level(logging.WARNING, logger="kdexp"):
        assert run("swapped", second_folder) == live
    swapped = [r.getMessage() for r in caplog.records if "records the key" in r.getMessage()]
    assert len(swapped) == 2, caplog.text  # one warning per store: detected, computed again


def test_a_kept_table_is_served_only_under_its_own_key_and_only_for_its_images(images, tmp_path, caplog) -> None:
    """A kept table stored under another key (swapped by hand) is not loaded; one whose rows do not
    match this run's images is dropped and computed again with a warning — neither is served, and
    neither is blamed on the data module."""
    import logging

    model = teacher()
    forward, calls = forward_counter(model)
    views = torch.tensor([[0, 0, 0, 0], [1, 2, 1, 1]])
    x = views_of(images, views)
    kept = TeacherOutputCache(GRID, 10)
    kept.load_store(tmp_path / "aaaa.pt")
    kept.logits(x, views, forward)
    assert kept.save_store()
    assert torch.load(tmp_path / "aaaa.pt", weights_only=True)["key"] == "aaaa"  # the file records its key
    (tmp_path / "aaaa.pt").rename(tmp_path / "bbbb.pt")  # as if swapped by hand
    with caplog.at_level(logging.WARNING, logger="kdexp"):
        assert TeacherOutputCache(GRID, 10).load_store(tmp_path / "bbbb.pt") == 0
    assert "records the key 'aaaa', not 'bbbb'" in caplog.text

    (tmp_path / "bbbb.pt").rename(tmp_path / "aaaa.pt")
    again = TeacherOutputCache(GRID, 10)
    assert again.load_store(tmp_path / "aaaa.pt") == 2
    other = views_of(255 - images, views)  # other images behind the same views (a key that missed a change)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdexp"):
        out = again.logits(other, views, forward)
    assert calls == [2, 2] and torch.equal(out, model(other))  # computed again, not served
    assert "do not match this run's images" in caplog.text
    assert again.save_store()  # the kept table is replaced by this run's
    assert again.load_store(tmp_path / "aaaa.pt") == 2 and torch.equal(again.table[again.filled], model(other))


def test_data_fingerprint_follows_content_not_size(tmp_path) -> None:
    from PIL import Image
    from torch.utils.data import Subset
    from torchvision.datasets import ImageFolder

    from kdexp.data.tensor import BatchedImages, ImageTensors
    from kdexp.teacher.test_logits import data_fingerprint

    def tensors(seed: int) -> BatchedImages:
        gen = torch.Generator().manual_seed(seed)
        data = ImageTensors(torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8, generator=gen), torch.arange(8) % 3)
        return BatchedImages(data, (0.5,), (0.5,), raw=False)

    assert data_fingerprint(tensors(0)) == data_fingerprint(tensors(0))  # the content, wherever it was read
    assert data_fingerprint(tensors(0)) != data_fingerprint(tensors(1))  # same size, other images
    relabelled = tensors(0)
    relabelled.data.labels = relabelled.data.labels.flip(0)
    assert data_fingerprint(relabelled) != data_fingerprint(tensors(0))
    assert data_fingerprint(Subset(tensors(0), [0, 1])) != data_fingerprint(Subset(tensors(0), [0, 2]))

    for cls in ("a", "b"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        Image.new("L", (4, 4), 7).save(tmp_path / "f" / cls / "0.png")
    folder = lambda: ImageFolder(str(tmp_path / "f"))  # noqa: E731
    before = data_fingerprint(folder())
    assert data_fingerprint(folder()) == before
    Image.new("L", (4, 4), 9).save(tmp_path / "f" / "a" / "0.png")  # a file replaced
    import os

    os.utime(tmp_path / "f" / "a" / "0.png", ns=(1, 1))
    assert data_fingerprint(folder()) != before
