"""Class-incremental learning: protocol, herding memory, growing head, LwF/iCaRL losses, metrics,
and 2-step runs on fake data checked against a hand evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdexp.data.fake import FakeDataModule
from kdexp.incremental.head import grown
from kdexp.methods.incremental_losses import icarl_bce, lwf_distillation, new_class_ce
from kdexp.incremental.memory import ExemplarMemory, herding, nme_predict
from kdexp.incremental.metrics import average_forgetting, step_accuracies, summary
from kdexp.incremental.protocol import IncrementalData, check_incremental_cfg, class_split
from kdexp.models import build_model
from kdexp.runner.chain import frozen_copy
from kdexp.methods import build_method


# --- the protocol --------------------------------------------------------------------------------
def test_class_split_is_a_seeded_permutation_cut_into_steps() -> None:
    split = class_split({"tasks": 3, "class_order_seed": 1993}, 10)
    assert sorted(split.order) == list(range(10))
    assert split.bounds == (0, 4, 7, 10)  # 10 = 4 + 3 + 3: the first C % tasks get one more
    assert split.order == class_split({"tasks": 3, "class_order_seed": 1993}, 10).order
    assert split.order != class_split({"tasks": 3, "class_order_seed": 0}, 10).order
    explicit = class_split({"tasks": 5, "class_order": [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]}, 10)
    assert explicit.classes(0) == [9, 8] and explicit.classes(4) == [1, 0]
    assert explicit.label_map()[9] == 0 and explicit.label_map()[0] == 9
    assert explicit.task_of_position().tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_step_data_holds_only_its_classes_and_evaluates_on_all_seen() -> None:
    base = FakeDataModule(image_shape=(1, 8, 8), num_classes=4, train_size=80, test_size=40)
    base.setup()
    split = class_split({"tasks": 2, "class_order": [2, 0, 3, 1]}, 4)
    data = IncrementalData(base, split)
    first, second = data.step(0), data.step(1)
    assert {int(y) for _, y in first.train_set} == {0, 1}  # positions of classes 2 and 0
    assert {int(y) for _, y in second.train_set} == {2, 3}  # only the new classes' images
    assert {int(y) for _, y in first.test_set} <= {0, 1} and {int(y) for _, y in second.test_set} == {0, 1, 2, 3}
    assert len(second.test_set) == len(base.test_set) and second.num_classes == 4 and first.num_classes == 2
    joint = data.step(1, joint=True)
    assert len(joint.train_set) == len(base.train_set)
    with_memory = data.step(1, exemplars=torch.tensor([int(data.class_indices(2)[0])]))
    assert len(with_memory.train_set) == len(second.train_set) + 1


@pytest.mark.parametrize(
    ("inc", "uses_memory", "words"),
    [
        ({"tasks": 11}, False, ["incremental.tasks=11", "10 classes", "1..10"]),
        ({"tasks": 10}, False, ["incremental.tasks=10", "single class", "from 1 to 9"]),
        ({"tasks": 2, "class_order": [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]}, False, ["class_order", "permutation", "missing [9]", "repeated [8]"]),
        ({"tasks": 2, "class_order": [0, 1, 2]}, False, ["class_order", "permutation of 0..9"]),
        ({"tasks": 2, "memory": 9}, True, ["incremental.memory=9", "one exemplar per class", "10"]),
        ({"tasks": 0}, False, ["incremental.tasks", ">= 1"]),
        ({"tasks": 2, "memroy": 20}, False, ["memroy", "allowed"]),
    ],
)
def test_bad_incremental_options_are_named(inc, uses_memory, words) -> None:
    with pytest.raises(ValueError) as err:
        check_incremental_cfg(inc, 10, uses_memory)
    for word in words:
        assert word in str(err.value)


def test_a_small_memory_is_fine_for_methods_without_one() -> None:
    check_incremental_cfg({"tasks": 5, "memory": 0}, 10, uses_memory=False)


# --- herding and the memory ----------------------------------------------------------------------
def test_herding_mean_is_closer_to_the_class_mean_than_random_picks() -> None:
    gen = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(300, 16, generator=gen) + 0.5, dim=1)
    mean = features.mean(0)
    for m in (5, 20):
        picked = herding(features, m)
        assert len(set(picked)) == m  # no repeats
        herd_gap = (features[picked].mean(0) - mean).norm()
        random_gaps = [
            (features[torch.randperm(300, generator=gen)[:m]].mean(0) - mean).norm() for _ in range(200)
        ]
        assert all(herd_gap < gap for gap in random_gaps)
    assert herding(features, 20)[:5] == herding(features, 5)  # a prefix is the smaller selection


def test_memory_never_exceeds_its_budget_and_is_balanced() -> None:
    memory, seen = ExemplarMemory(budget=23), 0
    gen = torch.Generator().manual_seed(1)
    for new_classes in ([0, 1], [2, 3, 4], [5]):
        seen += len(new_classes)
        m = memory.per_class(seen)
        memory.reduce(m)
        for label in new_classes:
            candidates = torch.arange(100 * label, 100 * label + 50)
            memory.add(label, candidates, torch.randn(50, 8, generator=gen), m)
        assert len(memory) <= 23
        assert {len(v) for v in memory.exemplars.values()} == {23 // seen}
    assert all(all(100 * c <= i < 100 * c + 50 for i in idx) for c, idx in memory.exemplars.items())


def test_nme_picks_the_nearest_class_mean() -> None:
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    feats = torch.tensor([[0.9, 0.1], [0.1, 0.8], [-0.7, -0.6]])
    assert nme_predict(feats, means).tolist() == [0, 1, 2]


# --- the growing head ----------------------------------------------------------------------------
def test_grown_head_keeps_old_weights_and_leaves_the_teacher_alone() -> None:
    torch.manual_seed(0)
    old = build_model({"name": "cnn_tiny"}, 3, 1)
    old.module.eval().requires_grad_(False)
    new = grown(old, 5)
    fc_old, fc_new = old.module.fc, new.module.fc
    assert (fc_old.out_features, fc_new.out_features) == (3, 5)
    assert torch.equal(fc_new.weight[:3], fc_old.weight) and torch.equal(fc_new.bias[:3], fc_old.bias)
    assert fc_new.weight is not fc_old.weight and all(p.requires_grad for p in new.module.parameters())
    x = torch.randn(4, 1, 28, 28)
    new.module.eval()
    assert torch.allclose(new.module(x)[:, :3], old.module(x))  # same function on the old classes
    new.module.fc.weight.data.zero_()
    assert fc_old.weight.abs().sum() > 0  # the previous model (the teacher) is untouched
    with pytest.raises(ValueError, match="cannot shrink"):
        grown(old, 2)


# --- the losses ----------------------------------------------------------------------------------
def test_lwf_distillation_uses_only_the_old_class_logits() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 3, generator=gen)
    student = torch.randn(6, 5, generator=gen, requires_grad=True)
    loss = lwf_distillation(student, teacher, temperature=2.0)
    # By hand: the cross-entropy of softened distributions over the three old classes (no T²).
    p = torch.softmax(teacher / 2, 1)
    expected = -(p * torch.log_softmax(student[:, :3].detach() / 2, 1)).sum(1).mean()
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.count_nonzero(student.grad[:, 3:]) == 0 and torch.count_nonzero(student.grad[:, :3]) > 0
    other = student.detach().clone()
    other[:, 3:] += 100.0  # the new classes' logits do not enter
    assert torch.allclose(lwf_distillation(other, teacher, 2.0), expected)
    # The minimum is the teacher's own distribution: logits equal up to a constant.
    same = torch.cat([teacher + 1.0, torch.zeros(6, 2)], 1)
    entropy = -(p * torch.log(p)).sum(1).mean()
    assert torch.allclose(lwf_distillation(same, teacher, 2.0), entropy, atol=1e-6)


def lwf_step(method: dict):
    """A step-2 module: the student's head grown from 2 to 4 classes, the step-1 model teaching."""
    torch.manual_seed(0)
    teacher = frozen_copy(build_model({"name": "cnn_tiny"}, 2, 1))
    student = grown(teacher, 4)
    sgd, none = {"name": "sgd", "lr": 0.1}, {"name": "none"}
    return build_method(method, student, teacher, 4, (1, 28, 28), sgd, none), teacher


def test_lwf_module_distils_the_previous_models_old_class_outputs() -> None:
    module, teacher = lwf_step({"name": "lwf"})
    x, y = torch.randn(8, 1, 28, 28), torch.tensor([2, 3] * 4)
    module.train()
    logits, terms = module.training_losses(x, y)
    assert set(terms) == {"ce", "lwf"} and terms["lwf"][0] == 1.0 and module.temperature == 2.0
    with torch.no_grad():
        t = teacher.module(x)
    assert t.shape == (8, 2)
    assert torch.allclose(terms["lwf"][1], lwf_distillation(logits, t, 2.0))
    assert torch.allclose(terms["ce"][1], F.cross_entropy(logits[:, 2:], y - 2))
    assert not any(p.requires_grad for p in teacher.module.parameters())
    assert "teacher" not in module.report_models()


def test_lwf_logit_standardization_z_scores_both_sides_old_logits() -> None:
    from kdexp.losses import standardize_logits

    module, teacher = lwf_step({"name": "lwf", "logit_standardization": True})
    x, y = torch.randn(8, 1, 28, 28), torch.tensor([2, 3] * 4)
    logits, terms = module.training_losses(x, y)
    with torch.no_grad():
        t = teacher.module(x)
    want = lwf_distillation(standardize_logits(logits[:, :2]), standardize_logits(t), 2.0)
    assert torch.allclose(terms["lwf"][1], want)


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        ({"name": "finetune", "logit_standardization": True}, "needs a softmax distillation term"),
        ({"name": "icarl", "kd_weight": 0.5}, "method.kd_weight must be >= 0 and <= 0"),
        ({"name": "lwf", "ce_logits": "old"}, "method.ce_logits='old' is not one of new, all"),
    ],
)
def test_incremental_options_are_checked(cfg, words) -> None:
    from kdexp.methods import check_method_cfg

    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        check_method_cfg(cfg)


def test_icarl_module_loss_is_the_bce_with_old_class_targets() -> None:
    module, teacher = lwf_step({"name": "icarl"})
    x, y = torch.randn(8, 1, 28, 28), torch.tensor([0, 3] * 4)  # an exemplar of class 0 among new images
    module.train()
    logits, terms = module.training_losses(x, y)
    with torch.no_grad():
        t = teacher.module(x)
    assert set(terms) == {"bce"} and torch.allclose(terms["bce"][1], icarl_bce(logits, y, t))


def test_lwf_new_class_ce_sees_only_new_logits() -> None:
    student = torch.tensor([[9.0, 9.0, 2.0, 0.0]])
    assert torch.allclose(new_class_ce(student, torch.tensor([2]), old=2), F.cross_entropy(student[:, 2:], torch.tensor([0])))


def test_icarl_bce_distils_old_classes_and_labels_new_ones() -> None:
    student = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    teacher = torch.tensor([[3.0, -2.0]])
    targets = torch.tensor([[torch.sigmoid(torch.tensor(3.0)), torch.sigmoid(torch.tensor(-2.0)), 0.0, 1.0]])
    expected = F.binary_cross_entropy(torch.sigmoid(student), targets)
    assert torch.allclose(icarl_bce(student, torch.tensor([3]), teacher), expected, atol=1e-6)
    first_step = F.binary_cross_entropy(torch.sigmoid(student), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    assert torch.allclose(icarl_bce(student, torch.tensor([2]), None), first_step, atol=1e-6)


# --- the metrics ---------------------------------------------------------------------------------
def test_matrix_summaries_by_hand() -> None:
    matrix = [[0.9, None, None], [0.6, 0.8, None], [0.3, 0.7, 0.95]]
    stats = summary(matrix, seen=[0.9, 0.7, 0.65])
    assert stats["average_incremental_accuracy"] == pytest.approx((0.9 + 0.7 + 0.65) / 3)
    assert stats["final_accuracy"] == 0.65
    # forgetting: step 1 fell from its best 0.9 to 0.3, step 2 from 0.8 to 0.7
    assert stats["average_forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.7)) / 2)
    assert average_forgetting([[0.5, None]]) is None


def test_step_accuracies_split_by_step() -> None:
    task_of = torch.tensor([0, 0, 1, 1])
    positions = torch.tensor([0, 1, 2, 3, 3])
    predictions = torch.tensor([0, 0, 2, 3, 1])
    row, overall = step_accuracies(predictions, positions, task_of, tasks=3)
    assert row == [0.5, pytest.approx(2 / 3), None]
    assert overall == pytest.approx(3 / 5)


# --- runs ----------------------------------------------------------------------------------------
FAKE = (
    "incremental=fashion_mnist_5", "data=fake", "data.image_shape=[1,28,28]", "data.train_size=96",
    "data.test_size=48", "incremental.tasks=2", "incremental.memory=10", "student=cnn_tiny",
    "trainer.max_epochs=1", "callbacks.progress_bar=null",
)


def hand_matrix(run_dir: Path, tasks: int) -> list[list[float | None]]:
    """Evaluate each step's saved model on the fake test set, by hand."""
    results = json.loads((run_dir / "results.json").read_text())
    order = results["run"]["class_order"]
    per_step = len(order) // tasks
    position = {c: p for p, c in enumerate(order)}
    data = FakeDataModule(image_shape=(1, 28, 28), num_classes=10, train_size=96, test_size=48)
    data.setup()
    matrix = []
    for step in range(tasks):
        seen = per_step * (step + 1)
        model = build_model({"name": "cnn_tiny"}, seen, 1).module
        model.load_state_dict(torch.load(run_dir / f"step{step + 1}" / "student.pt", weights_only=True))
        model.eval()
        hits = {j: [] for j in range(tasks)}
        with torch.no_grad():
            for x, y in data.test_set:
                p = position[int(y)]
                if p < seen:
                    hits[p // per_step].append(int(model(x[None]).argmax(1)) == p)
        matrix.append([sum(h) / len(h) if h else None for j, h in sorted(hits.items())])
    return matrix


def test_two_step_run_matrix_equals_a_hand_evaluation(kdexp_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "ft"
    outcome = kdexp_run(*FAKE, "method=finetune", cache_dir=tmp_path / "cache", run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((run_dir / "results.json").read_text())
    inc = results["incremental"]
    assert inc["classifier"] == "head" and results["run"]["tasks"] == 2
    expected = hand_matrix(run_dir, 2)
    for got_row, want_row in zip(inc["accuracy_matrix"], expected):
        assert got_row == [pytest.approx(v) if v is not None else None for v in want_row]
    assert results["student"]["acc_top1"] == inc["final_accuracy"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    seen = events.Scalars("incremental/head_acc_seen")
    assert [e.step for e in seen] == [1, 2] and seen[-1].value == pytest.approx(inc["final_accuracy"])
    assert "incremental/head_accuracy_matrix" in events.Tags()["images"]
    # kdexp-report: the run is one row (its steps are parts of it), with the incremental table.
    from kdexp.report import write_report

    rows = write_report([run_dir], out=tmp_path / "report")
    assert len(rows) == 1 and rows[0]["method"] == "finetune"
    table = (tmp_path / "report" / "incremental.md").read_text()
    assert f"{100 * inc['average_incremental_accuracy']:.2f} ± —" in table  # one seed: no spread, not ± 0.00
    assert (tmp_path / "report" / "incremental_accuracy.png").is_file()


def test_icarl_run_keeps_its_memory_and_resumes_in_the_unfinished_step(kdexp_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "icarl"
    outcome = kdexp_run(*FAKE, "method=icarl", cache_dir=tmp_path / "cache", run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    results = json.loads((run_dir / "results.json").read_text())
    inc = results["incremental"]
    assert inc["classifier"] == "nme" and set(inc["classifiers"]) == {"head", "nme"}
    assert results["student"]["acc_top1"] == inc["classifiers"]["nme"]["final_accuracy"]
    for step, per_class in ((1, 2), (2, 1)):  # memory 10: 10 // 5 then 10 // 10 per class
        memory = json.loads((run_dir / f"step{step}" / "memory.json").read_text())
        sizes = [len(v) for v in memory["exemplars"].values()]
        assert len(sizes) == 5 * step and set(sizes) == {per_class} and sum(sizes) <= 10
    step1 = json.loads((run_dir / "step1" / "memory.json").read_text())
    step2 = json.loads((run_dir / "step2" / "memory.json").read_text())
    for label, kept in step2["exemplars"].items():  # old classes keep their best (first) exemplar
        if label in step1["exemplars"]:
            assert kept == step1["exemplars"][label][:1]
    new_images = inc["steps"][1]["train_images"]

    # Step 2 lost its results: step 1 and its memory are reused, step 2 trains again on the same data.
    stamp = os.path.getmtime(run_dir / "step1" / "student.pt")
    (run_dir / "step2" / "results.json").unlink()
    outcome = kdexp_run(*FAKE, "method=icarl", cache_dir=tmp_path / "cache", run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    assert os.path.getmtime(run_dir / "step1" / "student.pt") == stamp
    again = json.loads((run_dir / "results.json").read_text())["incremental"]
    assert again["steps"][1]["train_images"] == new_images
    assert json.loads((run_dir / "step2" / "memory.json").read_text())["exemplars"].keys() == step2["exemplars"].keys()


def test_a_failed_step_keeps_the_finished_ones_and_the_rerun_continues(kdexp_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "fail"
    boom = ("+callbacks.boom._target_=incremental_helpers.FailInStep", "+callbacks.boom.step=step2")  # tests/ is on sys.path
    outcome = kdexp_run(*FAKE, "method=finetune", *boom, cache_dir=tmp_path / "cache", run_dir=run_dir)
    assert outcome.exit_code != 0 and "injected failure in step2" in outcome.message
    failed = json.loads((run_dir / "results.json").read_text())["run"]
    assert failed["status"] == "failed" and "injected failure" in failed["error"]
    step1 = json.loads((run_dir / "step1" / "results.json").read_text())
    assert step1["run"]["complete"] and "incremental" in step1
    stamp = os.path.getmtime(run_dir / "step1" / "student.pt")
    outcome = kdexp_run(*FAKE, "method=finetune", cache_dir=tmp_path / "cache", run_dir=run_dir)
    assert outcome.exit_code == 0, outcome.message
    assert os.path.getmtime(run_dir / "step1" / "student.pt") == stamp  # reused, not retrained
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["complete"] and len(results["incremental"]["accuracy_seen"]) == 2
    assert "injected failure" in results["run"]["earlier_failures"][0]["message"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (("incremental.tasks=11",), ["incremental.tasks=11"]),
        (("method=icarl", "incremental.memory=5"), ["incremental.memory=5", "one exemplar per class"]),
        (("method=kd",), ["method=kd", "choose one of", "finetune", "lwf", "icarl", "joint"]),
    ],
)
def test_bad_input_stops_before_training(kdexp_run, tmp_path: Path, overrides, words) -> None:
    method = () if any(o.startswith("method=") for o in overrides) else ("method=lwf",)
    outcome = kdexp_run(*FAKE, *method, *overrides, cache_dir=tmp_path / "cache", run_dir=tmp_path / "bad")
    assert outcome.exit_code == 2, outcome.message
    for word in words:
        assert word in outcome.message
    assert not (tmp_path / "bad" / "step1").exists()


def test_kdexp_eval_of_a_step_uses_its_own_classes_and_order(tmp_path: Path, capsys) -> None:
    """A step is evaluated on the test images of the classes it had seen, labelled by their
    position in the run's class order (not raw labels, not the default data set): the numbers
    the step recorded. The run folder itself is refused, naming its steps' folders."""
    import kdexp
    from kdexp.evaluation import main

    overrides = [o for o in FAKE if not o.startswith("callbacks.")]
    run_dir = tmp_path / "inc"
    kdexp.run([*overrides, "method=finetune", "logger=none", "profile.enabled=false", "incremental.class_order_seed=3",
               f"paths.cache_dir={tmp_path / 'cache'}"], output_dir=run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    for step in (1, 2):
        recorded = json.loads((run_dir / f"step{step}" / "results.json").read_text())
        for run in (run_dir / f"step{step}", run_dir / f"step{step}" / "checkpoints" / "last.ckpt"):
            out = kdexp.evaluate(run, ["profile.enabled=false"], record=False)
            assert (out["run"]["test_images"] == 48) == (step == 2)  # step 1: only its 5 classes' images
            assert out["student"]["acc_top1"] == pytest.approx(recorded["incremental"]["head"]["accuracy_seen"])
            assert out["student"]["acc_top1"] == pytest.approx(results["incremental"]["accuracy_seen"][step - 1])
    assert out["run"]["test_images"] == 48  # step 2 has seen all 10 classes
    assert main([f"run={run_dir}"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "sub-runs' folders (step1, step2)" in message and f"run={run_dir / 'step2'}" in message


def test_incremental_method_without_a_protocol_is_refused(kdexp_run, tmp_path: Path) -> None:
    outcome = kdexp_run("data=fake", "method=lwf", cache_dir=tmp_path / "cache", run_dir=tmp_path / "r")
    assert outcome.exit_code == 2
    assert "incremental=" in outcome.message


# --- the presets ---------------------------------------------------------------------------------
def test_presets_compose_with_their_published_settings() -> None:
    from hydra import compose, initialize_config_dir

    from kdexp.methods import check_method_cfg
    from kdexp.tools.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for preset, tasks in (("cifar100_10", 10), ("cifar100_20", 20)):
            cfg = compose(config_name="train", overrides=[f"incremental={preset}", "method=icarl"])
            assert (cfg.data.name, cfg.student.name, cfg.incremental.tasks, cfg.incremental.memory) == ("cifar100", "resnet32", tasks, 2000)
            assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.data.batch_size, cfg.trainer.max_epochs) == (2.0, 1e-5, 128, 70)
            assert list(cfg.scheduler.milestones) == [49, 63] and cfg.scheduler.gamma == 0.2
            check_incremental_cfg(dict(cfg.incremental), 100, uses_memory=True)
        cfg = compose(config_name="train", overrides=["incremental=fashion_mnist_5", "method=lwf"])
        assert (cfg.data.name, cfg.incremental.tasks, cfg.incremental.class_order_seed) == ("fashion_mnist", 5, 1993)
        _, options = check_method_cfg(dict(cfg.method))
        assert options == {
            "ce_weight": 1.0, "lwf_weight": 1.0, "temperature": 2.0, "ce_logits": "new", "kd_weight": 0.0,
            "logit_standardization": False,
        }
    assert class_split({"tasks": 10, "class_order_seed": 1993}, 100).classes(0)[:3] == [68, 56, 78]  # the order used since iCaRL
