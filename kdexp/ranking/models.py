"""Rankers: models that score (user, items). Every ranker maps ``users`` (B,) and ``items`` (B, N)
to scores (B, N) (higher = ranked higher) and declares its ``stages``: ``embedding`` (the feature
embedding layer, which rocket may share) and, for rankers with an MLP, ``hidden1``..``hiddenL``
(the hidden layers' activations, which hints match). Registered in :data:`RANKING_MODELS`;
``teacher=<name>`` / ``student=<name>`` pick one, its options (``teacher.dim=100``) come from the
model config."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from kdexp.registry import Registry


@dataclass(frozen=True)
class Catalogue:
    """What a ranker is sized by: the numbers of users and items, the cardinalities of the user
    side features (age bucket, gender, occupation) and the number of item genres."""

    n_users: int
    n_items: int
    user_cards: tuple[int, ...]
    n_genres: int


RANKING_MODELS: Registry[Callable[..., nn.Module]] = Registry("ranking model", sort=True)
MODEL_KEYS = ("source", "name", "checkpoint", "seed", "train")  # a model config's keys that are not options


class FieldEmbedding(nn.Module):
    """One ``dim``-wide embedding per field: user id, item id, each user side feature, and the
    item's genres (the mean of its genres' embeddings). ``side=False``: ids only."""

    def __init__(self, catalogue: Catalogue, dim: int, side: bool = True) -> None:
        super().__init__()
        self.dim, self.side = dim, side
        self.user = nn.Embedding(catalogue.n_users, dim)
        self.item = nn.Embedding(catalogue.n_items, dim)
        self.user_side = nn.ModuleList(nn.Embedding(c, dim) for c in catalogue.user_cards) if side else nn.ModuleList()
        self.genre = nn.Linear(catalogue.n_genres, dim, bias=False) if side else None
        for table in (self.user, self.item, *self.user_side):
            nn.init.normal_(table.weight, std=0.1)
        self.register_buffer("user_features", torch.zeros(catalogue.n_users, len(catalogue.user_cards), dtype=torch.long))
        self.register_buffer("item_genres", torch.zeros(catalogue.n_items, catalogue.n_genres))

    @property
    def fields(self) -> int:
        return 2 + (len(self.user_side) + 1 if self.side else 0)

    def user_fields(self, users: Tensor) -> Tensor:
        """(B, F_u, dim): the user's id and side-feature embeddings."""
        parts = [self.user(users)]
        feats = self.user_features[users]
        parts += [table(feats[:, k]) for k, table in enumerate(self.user_side)]
        return torch.stack(parts, dim=1)

    def item_fields(self, items: Tensor) -> Tensor:
        """(..., F_i, dim): the item's id embedding and (side) its genres' mean embedding."""
        parts = [self.item(items)]
        if self.side:
            genres = self.item_genres[items]
            parts.append(self.genre(genres) / genres.sum(-1, keepdim=True).clamp(min=1.0))
        return torch.stack(parts, dim=-2)


def attach_side_features(model: nn.Module, user_features: Tensor, item_genres: Tensor) -> None:
    """Copy the data's side features into every FieldEmbedding of ``model`` (buffers: saved with it)."""
    for module in model.modules():
        if isinstance(module, FieldEmbedding):
            module.user_features.copy_(user_features)
            module.item_genres.copy_(item_genres)


def mlp(widths: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))


class MLPScorer(nn.Module):
    """Fields (B, N, F, d) → [flattened fields, pairwise inner products if ``crosses``] → ReLU
    hidden layers → one score. ``hidden`` activations are what hints match."""

    def __init__(self, fields: int, dim: int, hidden: list[int], crosses: bool) -> None:
        super().__init__()
        self.crosses = crosses
        pairs = fields * (fields - 1) // 2 if crosses else 0
        self.layers = mlp([fields * dim + pairs, *hidden])
        self.out = nn.Linear(hidden[-1] if hidden else fields * dim + pairs, 1)
        self.register_buffer("pair_index", torch.triu_indices(fields, fields, offset=1), persistent=False)

    def forward(self, fields: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = fields.flatten(-2)
        if self.crosses:  # the feature crosses in front of the MLP (double DNN's teacher)
            inner = fields @ fields.transpose(-1, -2)
            x = torch.cat([x, inner[..., self.pair_index[0], self.pair_index[1]]], dim=-1)
        hidden = []
        for layer in self.layers:
            x = torch.relu(layer(x))
            hidden.append(x)
        return self.out(x).squeeze(-1), hidden


class Ranker(nn.Module):
    """Common to rankers: ``forward(users, items) -> (B, N)``; ``hidden(users, items)`` → the
    hidden layers' activations; ``stages``."""

    stages: tuple[str, ...] = ("embedding",)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return self.scores(users, items)[0]

    def scores(self, users: Tensor, items: Tensor) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError


@RANKING_MODELS.register("mf")
class MatrixFactorization(Ranker):
    """Matrix factorisation: score = <p_u, q_i> + b_i, ``dim`` factors (RD's setting: a teacher of
    dim 100, students of 10–20)."""

    def __init__(self, catalogue: Catalogue, dim: int = 64) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(catalogue, dim, side=False)
        self.bias = nn.Embedding(catalogue.n_items, 1)
        nn.init.zeros_(self.bias.weight)

    def scores(self, users: Tensor, items: Tensor) -> tuple[Tensor, list[Tensor]]:
        p = self.embedding.user(users).unsqueeze(1)
        return (p * self.embedding.item(items)).sum(-1) + self.bias(items).squeeze(-1), []


class FieldRanker(Ranker):
    """An MLP over the field embeddings (user id, item id, user side features, item genres)."""

    def __init__(self, catalogue: Catalogue, dim: int, hidden: list[int], crosses: bool) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(catalogue, dim)
        self.mlp = MLPScorer(self.embedding.fields, dim, list(hidden), crosses)
        self.stages = ("embedding", *(f"hidden{k + 1}" for k in range(len(hidden))))

    def scores(self, users: Tensor, items: Tensor) -> tuple[Tensor, list[Tensor]]:
        user = self.embedding.user_fields(users).unsqueeze(1).expand(-1, items.shape[1], -1, -1)
        return self.mlp(torch.cat([user, self.embedding.item_fields(items)], dim=-2))


@RANKING_MODELS.register("deep_ranker")
class DeepRanker(FieldRanker):
    """The precise ranking model (iQIYI's double-DNN teacher): field embeddings, their pairwise
    inner products (feature crosses) in front of a ReLU MLP."""

    def __init__(self, catalogue: Catalogue, dim: int = 32, hidden: list[int] | tuple[int, ...] = (256, 128, 64),
                 crosses: bool = True) -> None:
        super().__init__(catalogue, dim, list(hidden), crosses)


@RANKING_MODELS.register("mlp_ranker")
class MLPRanker(FieldRanker):
    """A small, fast ranker: the same fields, no crosses, one narrow hidden layer by default."""

    def __init__(self, catalogue: Catalogue, dim: int = 32, hidden: list[int] | tuple[int, ...] = (32,),
                 crosses: bool = False) -> None:
        super().__init__(catalogue, dim, list(hidden), crosses)


@RANKING_MODELS.register("two_tower")
class TwoTower(Ranker):
    """A recall model: a user tower and an item tower (fields → ReLU MLP → ``dim``), score = their
    inner product, so a user's full list is one matrix product against precomputed item vectors."""

    def __init__(self, catalogue: Catalogue, dim: int = 32, hidden: list[int] | tuple[int, ...] = (64,)) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(catalogue, dim)
        users_in, items_in = (1 + len(catalogue.user_cards)) * dim, 2 * dim
        self.user_tower = mlp([users_in, *hidden, dim])
        self.item_tower = mlp([items_in, *hidden, dim])

    @staticmethod
    def _tower(layers: nn.ModuleList, x: Tensor) -> Tensor:
        for k, layer in enumerate(layers):
            x = layer(x)
            x = torch.relu(x) if k < len(layers) - 1 else x
        return x

    def scores(self, users: Tensor, items: Tensor) -> tuple[Tensor, list[Tensor]]:
        u = self._tower(self.user_tower, self.embedding.user_fields(users).flatten(-2))
        v = self._tower(self.item_tower, self.embedding.item_fields(items).flatten(-2))
        return (u.unsqueeze(1) * v).sum(-1), []


def build_ranker(role: str, cfg: dict[str, Any], catalogue: Catalogue) -> nn.Module:
    """The ranker ``cfg['name']`` names, with the config's other keys as its options; a ValueError
    naming ``<role>.name`` or the option it does not take."""
    name = cfg.get("name")
    if name not in RANKING_MODELS:
        raise ValueError(
            f"{role}.name={name!r} is not a ranking model; task=ranking takes {role}=<one of: "
            f"{', '.join(RANKING_MODELS.names())}>"
        )
    build = RANKING_MODELS.get(name)
    options = {k: v for k, v in cfg.items() if k not in MODEL_KEYS}
    accepted = [p for p in inspect.signature(build).parameters if p != "catalogue"]
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(f"{role}.name={name!r} has no option {', '.join(f'{role}.{k}' for k in unknown)}; it accepts: {', '.join(accepted)}")
    model = build(catalogue, **options)
    model.ranker_name = name
    return model


def count_params(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the side-feature tables excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def score_all(model: nn.Module, n_users: int, n_items: int, users: Tensor | None = None, chunk_pairs: int = 200_000) -> Tensor:
    """Every item's score for ``users`` (default: all), (len(users), n_items), in chunks of about
    ``chunk_pairs`` (user, item) pairs; the model in eval mode meanwhile."""
    users = torch.arange(n_users) if users is None else users
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = max(1, chunk_pairs // max(n_items, 1))
    items = torch.arange(n_items, device=device)
    out = [model(part.to(device), items.expand(len(part), -1)).float().cpu() for part in users.split(rows)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, n_items)
