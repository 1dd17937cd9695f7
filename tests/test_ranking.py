"""task=ranking (kdexp/ranking, kdexp/tasks): the metrics against hand-computed rankings, each loss
on known inputs, the protocol, bad input, and tiny runs in process per method group."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kdexp.losses import kd_loss
from kdexp.ranking import losses as L
from kdexp.ranking import metrics as M
from kdexp.ranking.data import Interactions, fake_interactions, movielens_100k
from kdexp.ranking.protocol import split

# --- metrics ---------------------------------------------------------------------------------------


def test_sampled_hr_and_ndcg_against_hand_ranks() -> None:
    # user 0: positive 0.9 beats all 3 negatives → rank 0; user 1: two negatives above → rank 2;
    # user 2: a tie counts against the positive → rank 1
    pos = torch.tensor([0.9, 0.5, 0.5])
    neg = torch.tensor([[0.1, 0.2, 0.3], [0.6, 0.7, 0.1], [0.5, 0.1, 0.0]])
    rank = M.sampled_rank(pos, neg)
    assert rank.tolist() == [0, 2, 1]
    assert M.hit_rate(rank, 1) == pytest.approx(1 / 3)
    assert M.hit_rate(rank, 2) == pytest.approx(2 / 3)
    assert M.ndcg_single(rank, 2) == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert M.ndcg_single(rank, 3) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3)


def test_full_ranking_metrics_against_hand_ranks() -> None:
    # one user, 5 items; scores order the items 4 > 2 > 0 > 3 > 1; relevant: items 2 and 3 (positions 1 and 3)
    scores = torch.tensor([[0.3, 0.1, 0.8, 0.2, 0.9]])
    relevant = torch.tensor([[False, False, True, True, False]])
    got = M.full_ranking_metrics(scores, relevant, (1, 3))
    assert got["precision_at_1"] == 0.0
    assert got["precision_at_3"] == pytest.approx(1 / 3)
    idcg3 = 1 + 1 / math.log2(3)
    assert got["ndcg_full_at_3"] == pytest.approx((1 / math.log2(3)) / idcg3)
    assert got["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)  # P@2 = 1/2, P@4 = 2/4


def test_ties_rank_the_relevant_item_last() -> None:
    scores = torch.zeros(1, 4)
    relevant = torch.tensor([[True, False, False, False]])
    assert M.full_ranking_metrics(scores, relevant, (3,))["precision_at_3"] == 0.0


# --- losses ----------------------------------------------------------------------------------------


def test_own_losses_on_known_scores() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0]])
    assert float(L.bpr_loss(scores)) == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 - softplus
    assert float(L.bce_loss(scores)) == pytest.approx((sp(-2.0) + sp(0.0) + sp(1.0)) / 3)


def test_score_distillation_losses_on_known_scores() -> None:
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 0.0]])
    assert float(L.pointwise_loss(s, t)) == pytest.approx(2.0)  # ((1-3)^2 + 0) / 2
    p = 1 / (1 + math.exp(-3.0))  # the teacher's preference for item 0 over item 1
    expected = -(p * math.log(1 / (1 + math.exp(-1.0))) + (1 - p) * math.log(1 - 1 / (1 + math.exp(-1.0))))
    assert float(L.pairwise_loss(s, t)) == pytest.approx(expected, rel=1e-5)
    assert float(L.listwise_loss(s, t, 2.0)) == pytest.approx(float(kd_loss(s, t, 2.0)))


def test_rd_weights_and_loss() -> None:
    w = L.position_weights(3, 1.0)
    e = [math.exp(-r) for r in (1, 2, 3)]
    assert w.tolist() == pytest.approx([x / sum(e) for x in e])
    # the student ranks the teacher's items 0, 5, 1 (teacher ranks 0, 1, 2): discrepancies 0, 4, 0
    d = L.discrepancy_weights(torch.tensor([[0, 5, 1]]), mu=0.5)
    assert d.tolist()[0] == pytest.approx([0.0, 1.0, 0.0])
    top = torch.tensor([[0.0, 0.0, 0.0]])
    assert float(L.rd_loss(top, w.unsqueeze(0))) == pytest.approx(math.log(2))


def test_rrd_loss_is_the_plackett_luce_likelihood() -> None:
    interesting, rest = torch.tensor([[2.0, 1.0]]), torch.tensor([[0.0]])
    e = math.exp
    expected = -(math.log(e(2) / (e(2) + e(1) + e(0))) + math.log(e(1) / (e(1) + e(0))))
    assert float(L.rrd_loss(interesting, rest)) == pytest.approx(expected, rel=1e-6)


# --- protocol and data -----------------------------------------------------------------------------


def tiny(ratings: list[float]) -> Interactions:
    """User 0 rated items 0..4 at times 0..4 with ``ratings``; user 1 rated item 0 once."""
    n = len(ratings)
    return Interactions(
        users=np.array([0] * n + [1]), items=np.array([*range(n), 0]), ratings=np.array([*ratings, 5.0]),
        times=np.array([*range(n), 0.0]), n_users=2, n_items=8,
        user_features=np.zeros((2, 3), dtype=np.int64), user_cards=(1, 1, 1), item_genres=np.zeros((8, 19), np.float32),
    )


def test_leave_one_out_by_time_and_the_users_dropped(caplog) -> None:
    data = split(tiny([5, 5, 5, 5, 5]), None, 2, seed=0)
    assert data.eval_users.tolist() == [0] and data.test_items.tolist() == [4] and data.val_items.tolist() == [3]
    assert sorted(data.train_items[data.train_users == 0].tolist()) == [0, 1, 2]
    assert "1 of 2 users have fewer than 3 positives" in caplog.text
    assert not set(data.test_negatives[0].tolist()) & {0, 1, 2, 3, 4}  # never an item the user saw
    with pytest.raises(ValueError, match="data.positive_rating=4"):
        split(tiny([1, 2, 5, 1, 1]), 4, 2, seed=0)


def test_a_data_root_without_the_files_names_them(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"u\.data, u\.user, u\.item.*recbole==1\.2\.1"):
        movielens_100k(root=str(tmp_path))


def test_movielens_100k_from_the_recbole_package() -> None:
    from kdexp.ranking.data import recbole_folder

    if recbole_folder() is None:
        pytest.skip("the recbole data package is not installed (make's set-up installs it)")
    raw = movielens_100k()
    assert (raw.n_users, raw.n_items, len(raw.users)) == (943, 1682, 100_000)
    assert raw.item_genres.sum() > 1682  # most films have a genre, some several


def test_fake_interactions_are_seeded() -> None:
    a, b = fake_interactions(seed=3), fake_interactions(seed=3)
    assert (a.items == b.items).all() and a.n_users == 64


# --- runs ------------------------------------------------------------------------------------------

FAST = ("task=ranking", "data=fake_interactions", "trainer.max_epochs=2", "teacher.train.max_epochs=2",
        "logger=none", "profile.min_run_time=0.01", "profile.throughput_batch=8")
DEEP = ("teacher=deep_ranker", "student=mlp_ranker", "teacher.hidden=[16,8]", "student.hidden=[8]", "teacher.dim=8", "student.dim=8")


@pytest.mark.parametrize("overrides", [
    ("method=vanilla",),
    ("method=listwise",),
    ("method=pairwise", "method.loss=bce"),
    ("method=rd", "method.warm_up_epochs=1"),
    ("method=rrd",),
    ("method=hints", *DEEP),
    ("method=rocket", "method.shared_stages=1", *DEEP),
], ids=lambda o: o[0])
def test_a_tiny_ranking_run_per_method_group(kdexp_run, shared_cache, overrides) -> None:
    out = kdexp_run(*FAST, *overrides, cache_dir=shared_cache)
    assert out.error is None, out.message
    results = json.loads((out.run_dir / "results.json").read_text())
    assert results["run"]["task"] == "ranking" and results["run"]["status"] == "complete"
    student = results["student"]
    for field in ("hr_at_10", "ndcg_at_10", "precision_at_5", "map", "val_hr_at_10", "latency_ms_b1", "throughput_users_per_s"):
        assert field in student
    assert 0.0 <= student["hr_at_10"] <= 1.0
    if overrides[0] != "method=vanilla":
        assert "hr_at_10_gap" in results["comparison"] and results["teacher"]["params"] > 0
    assert "HR@10" in out.output  # the teacher-vs-student table


def test_ranking_bad_input(kdexp_run, shared_cache) -> None:
    out = kdexp_run(*FAST, "method=kd", cache_dir=shared_cache)
    assert out.exit_code == 2 and "is not a ranking method" in out.message and "rrd" in out.message
    out = kdexp_run(*FAST, "method=rd", "method.topk=500", cache_dir=shared_cache)
    assert out.exit_code == 2 and "method.topk=500 is larger than the items" in out.message
    out = kdexp_run(*FAST, "method=hints", cache_dir=shared_cache)  # mf has no hidden layers
    assert out.exit_code == 2 and "hidden MLP" in out.message
    out = kdexp_run(*FAST, "method=listwise", "teacher.dim=2", "student.dim=30", "trainer.max_epochs=1", cache_dir=shared_cache)
    assert out.error is None and "larger than the teacher" in out.output
