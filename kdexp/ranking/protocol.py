"""The evaluation protocol, declared in the data config: implicit feedback (every rating, or
``rating >= positive_rating``), leave-one-out by timestamp (a user's last positive is the test item,
the one before it the validation item, the rest train), and per user ``eval_negatives`` items it
never interacted with (the NCF protocol: 99), drawn once from the run's seed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from kdexp.ranking.data import Interactions

log = logging.getLogger("kdexp")
MIN_POSITIVES = 3  # a test item, a validation item and at least one to train on


@dataclass
class RankingData:
    """One run's split. ``train_users``/``train_items``: the training positives (pairs);
    ``seen``: (n_users, n_items) bool, every item a user interacted with (any rating: never a
    negative); ``train_mask``: the training positives as a bool matrix; ``eval_users``: the users
    with a validation and a test item (``val_items``/``test_items`` aligned with them), whose
    ``val_negatives``/``test_negatives`` are (len(eval_users), eval_negatives) item ids."""

    n_users: int
    n_items: int
    train_users: torch.Tensor
    train_items: torch.Tensor
    seen: torch.Tensor
    train_mask: torch.Tensor
    eval_users: torch.Tensor
    val_items: torch.Tensor
    test_items: torch.Tensor
    val_negatives: torch.Tensor
    test_negatives: torch.Tensor
    user_features: torch.Tensor
    user_cards: tuple[int, ...]
    item_genres: torch.Tensor
    dropped_users: int = 0

    @property
    def summary(self) -> str:
        return (f"{self.n_users} users, {self.n_items} items, {len(self.train_users)} training positives, "
                f"{len(self.eval_users)} users evaluated")


def split(raw: Interactions, positive_rating: float | None, eval_negatives: int, seed: int) -> RankingData:
    """Leave-one-out by timestamp over the implicit positives (see the module notes). Users with
    fewer than 3 positives train on what they have and are not evaluated (a warning says how many);
    a ValueError if none is left to evaluate or ``eval_negatives`` exceeds what a user has unseen."""
    keep = np.ones(len(raw.users), bool) if positive_rating is None else raw.ratings >= positive_rating
    order = np.lexsort((np.arange(len(raw.users)), raw.times, raw.users))  # per user, by time (stable)
    order = order[keep[order]]
    users, items = raw.users[order], raw.items[order]
    seen = torch.zeros(raw.n_users, raw.n_items, dtype=torch.bool)
    seen[torch.from_numpy(raw.users), torch.from_numpy(raw.items)] = True
    starts = np.searchsorted(users, np.arange(raw.n_users + 1))
    train, eval_users, val_items, test_items = [], [], [], []
    dropped = 0
    for u in range(raw.n_users):
        own = items[starts[u]:starts[u + 1]]
        _, first = np.unique(own[::-1], return_index=True)  # a re-rated item counts once, at its last time
        own = own[::-1][np.sort(first)][::-1]
        if len(own) < MIN_POSITIVES:
            dropped += 1
            train += [(u, i) for i in own]
            continue
        train += [(u, i) for i in own[:-2]]
        eval_users.append(u)
        val_items.append(own[-2])
        test_items.append(own[-1])
    rule = "every rating" if positive_rating is None else f"rating >= {positive_rating:g} (data.positive_rating)"
    if not eval_users:
        raise ValueError(
            f"data.positive_rating={positive_rating}: with {rule} as a positive, no user has the {MIN_POSITIVES} "
            "positives leave-one-out needs (a test item, a validation item, one to train on); lower "
            "data.positive_rating or set it to null (every rating a positive)"
        )
    if dropped:
        log.warning(
            "%d of %d users have fewer than %d positives with %s as a positive: they have no test item, so they are "
            "not evaluated (their positives still train)", dropped, raw.n_users, MIN_POSITIVES, rule,
        )
    eval_t = torch.tensor(eval_users)
    unseen = (~seen[eval_t]).sum(1)
    if int(unseen.min()) < eval_negatives:
        raise ValueError(
            f"data.eval_negatives={eval_negatives}: a user has only {int(unseen.min())} items it never interacted "
            f"with ({raw.n_items} items in all); give data.eval_negatives <= {int(unseen.min())}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    pairs = torch.tensor(train, dtype=torch.long).reshape(-1, 2)
    train_mask = torch.zeros_like(seen)
    train_mask[pairs[:, 0], pairs[:, 1]] = True
    return RankingData(
        n_users=raw.n_users, n_items=raw.n_items, train_users=pairs[:, 0], train_items=pairs[:, 1],
        seen=seen, train_mask=train_mask, eval_users=eval_t,
        val_items=torch.tensor(val_items), test_items=torch.tensor(test_items),
        val_negatives=sample_unseen(seen[eval_t], eval_negatives, generator),
        test_negatives=sample_unseen(seen[eval_t], eval_negatives, generator),
        user_features=torch.from_numpy(raw.user_features).long(), user_cards=tuple(raw.user_cards),
        item_genres=torch.from_numpy(raw.item_genres), dropped_users=dropped,
    )


def sample_unseen(seen: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """For each row of ``seen`` (users × items), ``count`` distinct items it does not hold, uniformly
    (random keys, the unseen items' smallest ``count``)."""
    keys = torch.rand(seen.shape, generator=generator)
    keys[seen] = 2.0  # never chosen while enough unseen items remain (checked by the caller)
    return keys.topk(count, dim=1, largest=False).indices
