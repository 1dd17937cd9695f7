"""The soft decision tree student: routing, loss, regulariser, cost, training under kd, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdexp.methods import build_method
from kdexp.models import build_model
from kdexp.models.soft_tree import SoftDecisionTree, check_tree_size
from kdexp.models.soft_tree_picture import max_path, tree_figure
from kdexp.profile import count_macs
from conftest import train_steps

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
NO_SCHED = {"name": "none"}


def tree(depth: int = 3, **kw) -> SoftDecisionTree:
    torch.manual_seed(0)
    return build_model({"name": "soft_tree", "depth": depth, **kw}, 10, 1, (1, 28, 28)).module


def test_path_probabilities_sum_to_one_and_reach_is_consistent() -> None:
    t = tree(depth=5)
    routing = t.route(torch.randn(16, 1, 28, 28))
    assert routing.path.shape == (16, 32) and routing.reach.shape == (16, 31)
    assert torch.allclose(routing.path.sum(1), torch.ones(16), atol=1e-6)
    assert torch.allclose(routing.reach[:, 0], torch.ones(16))  # everyone reaches the root
    # a node's children's reach = its reach times (1 − p) and p
    assert torch.allclose(routing.reach[:, 1], 1 - routing.right[:, 0], atol=1e-6)
    assert torch.allclose(routing.reach[:, 4], routing.reach[:, 1] * routing.right[:, 1], atol=1e-6)


def test_regulariser_matches_a_hand_computation_on_a_two_level_tree() -> None:
    t = tree(depth=2, penalty_strength=0.5)
    x = torch.randn(6, 1, 28, 28)
    routing = t.route(x)
    p = torch.sigmoid(t.beta * (x.flatten(1) @ t.inner.weight.T + t.inner.bias)).detach()
    reach = [torch.ones(6), 1 - p[:, 0], p[:, 0]]  # root, left child, right child
    expected = 0.0
    for node, depth in ((0, 0), (1, 1), (2, 1)):
        alpha = float((reach[node] * p[:, node]).sum() / reach[node].sum())
        expected += -0.5 * 2.0**-depth * 0.5 * (math.log(alpha) + math.log(1 - alpha))
    assert t.penalty(routing).item() == pytest.approx(expected, rel=1e-5)


def test_leaf_loss_is_path_weighted_cross_entropy_with_soft_targets() -> None:
    t = tree(depth=1)
    x = torch.randn(4, 1, 28, 28)
    targets = F.softmax(torch.randn(4, 10), dim=1)
    routing = t.route(x)
    log_q = F.log_softmax(t.leaves, dim=1)
    p = routing.right[:, 0]
    per_leaf = -(targets @ log_q.T)  # [4, 2]
    expected = ((1 - p) * per_leaf[:, 0] + p * per_leaf[:, 1]).mean()
    assert t.target_loss(routing, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_prediction_by_max_path_leaf_or_mixture() -> None:
    t = tree(depth=3)
    x = torch.randn(5, 1, 28, 28)
    routing = t.route(x)
    log_q = F.log_softmax(t.leaves, dim=1)
    assert torch.equal(t(x), log_q[routing.path.argmax(1)])
    t.prediction = "mixture"
    assert torch.allclose(t(x).exp(), routing.path @ log_q.exp(), atol=1e-6)
    leaf, nodes = max_path(t, x)
    assert torch.equal(leaf, routing.path.argmax(1)) and nodes[:, 0].eq(0).all()
    for level in range(2):  # each node on the path is a child of the one before
        child = nodes[:, level + 1] - 2 * nodes[:, level]
        assert ((child == 1) | (child == 2)).all()
    assert torch.equal(nodes[:, 2] * 2 + 1 + leaf % 2 - 7, leaf)  # the leaf is a child of the last


@pytest.mark.parametrize("prediction", ["max_path", "mixture"])
def test_flop_counter_sees_the_inner_nodes(prediction: str) -> None:
    depth, dim, leaves, classes = 6, 28 * 28, 64, 10
    macs = count_macs(tree(depth=depth, prediction=prediction), (1, 28, 28))
    expected = dim * (2**depth - 1) + (leaves * classes if prediction == "mixture" else 0)
    assert macs == expected


def test_kd_trains_the_tree_on_its_own_loss_and_the_loss_falls() -> None:
    torch.manual_seed(0)
    teacher = build_model({"name": "cnn_tiny"}, 10, 1)
    with torch.no_grad():  # a confident teacher: its soft targets are far from uniform
        teacher.module.fc.weight.mul_(50)
    student = build_model({"name": "soft_tree", "depth": 3}, 10, 1, (1, 28, 28))
    module = build_method({"name": "kd"}, student, teacher, 10, (1, 28, 28), SGD, NO_SCHED)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    module.train()
    _, terms = module.training_losses(x, y)
    assert set(terms) == {"ce", "kd", "tree_penalty"}
    assert (terms["ce"][0], terms["kd"][0], terms["tree_penalty"][0]) == (0.1, 0.9, 1.0)
    soft = F.softmax(teacher.module(x) / 4.0, dim=1)
    expected_kd = student.module.target_loss(student.module.route(x), soft)
    assert terms["kd"][1].item() == pytest.approx(expected_kd.item(), rel=1e-5)
    losses = train_steps(module, x, y, 30, optimizer=torch.optim.SGD(student.module.parameters(), lr=1.0))
    assert losses[-1] < losses[0] - 0.1
    assert student.module.beta.grad is not None  # β is learned


def test_vanilla_trains_the_tree_on_labels_only() -> None:
    student = build_model({"name": "soft_tree", "depth": 2}, 10, 1, (1, 28, 28))
    module = build_method({"name": "vanilla"}, student, None, 10, (1, 28, 28), SGD, NO_SCHED)
    _, terms = module.training_losses(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    assert set(terms) == {"ce", "tree_penalty"} and terms["ce"][0] == 1.0


def test_bad_depth_and_options_are_named() -> None:
    with pytest.raises(ValueError, match=r"student.depth=40 does not fit in memory.*student.depth <= \d+"):
        check_tree_size(40, 784, 10)
    with pytest.raises(ValueError, match="student.depth must be an integer >= 1"):
        tree(depth=0)
    with pytest.raises(ValueError, match="student.prediction='vote'.*max_path, mixture"):
        tree(prediction="vote")
    with pytest.raises(ValueError, match=r"no option\(s\) \['width'\]"):
        build_model({"name": "soft_tree", "width": 3}, 10, 1)


def test_picture_draws_filters_leaves_and_paths() -> None:
    fig = tree_figure(tree(depth=3), torch.randn(3, 1, 28, 28), torch.tensor([1, 2, 3]))
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("node ") for t in titles) == 7  # levels 0-2 of a depth-3 tree
    assert sum(t.startswith("path ") for t in titles) == 3


def test_cli_tree_run_writes_the_picture_and_a_too_deep_tree_fails_before_the_teacher(kdexp_run, tmp_path) -> None:
    common = ("data=fake", "data.image_shape=[1,28,28]", "student=soft_tree", "debug=fast", "logger=none")
    bad = kdexp_run(*common, "+student.depth=40", "method=kd", cache_dir=tmp_path / "c", run_dir=tmp_path / "bad")
    assert bad.exit_code == 2, bad.message
    assert "student.depth=40 does not fit in memory" in bad.message
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.pt"))  # no teacher trained
    good = kdexp_run(*common, "+student.depth=3", "method=vanilla", cache_dir=tmp_path / "c", run_dir=tmp_path / "ok")
    assert good.exit_code == 0, good.message
    assert (tmp_path / "ok" / "student_soft_tree.png").stat().st_size > 10_000


def test_pictures_go_to_the_run_folder_and_tensorboard(tmp_path) -> None:
    from kdexp.models.soft_tree_picture import write_tree_pictures

    class Board:
        def __init__(self) -> None:
            self.figures = []

        def add_figure(self, tag, figure, close=True) -> None:  # noqa: ANN001
            self.figures.append(tag)

    logger = type("Logger", (), {"experiment": Board()})()
    datamodule = type("DM", (), {"test_dataloader": lambda self: [(torch.randn(8, 1, 28, 28), torch.zeros(8))]})()
    models = {"student": tree(depth=2), "teacher": torch.nn.Linear(2, 2)}
    written = write_tree_pictures(models, datamodule, tmp_path, [logger])
    assert written == [tmp_path / "student_soft_tree.png"] and written[0].stat().st_size > 5_000
    assert logger.experiment.figures == ["student/soft_tree"]
