"""Interaction data sets for ranking: MovieLens-100K (RecBole's atomic files or GroupLens's own)
and a seeded synthetic set. Each builder returns :class:`Interactions`; the protocol
(kdexp.ranking.protocol) turns them into train / validation / test."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kdexp.registry import Registry

# MovieLens-100K's 19 genres in GroupLens's u.item column order; RecBole's .item names them the same.
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# Age buckets of MovieLens-1M's published grouping (under 18, 18-24, ..., 56+), used for ML-100K's ages too.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
INSTALL_HINT = (
    "install the data package with `python -m pip install --no-deps recbole==1.2.1` (its example data holds "
    "MovieLens-100K; kdexp never imports its code), or give data.root=<folder> with GroupLens's u.data, u.user "
    "and u.item (https://grouplens.org/datasets/movielens/100k/)"
)


@dataclass
class Interactions:
    """Raw interactions, 0-based ids: ``users``, ``items``, ``ratings``, ``times`` (one entry per
    rating); side features as integer codes: ``user_features`` (n_users, F_u) with ``user_cards``
    (each column's number of values), ``item_genres`` (n_items, G) multi-hot."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    times: np.ndarray
    n_users: int
    n_items: int
    user_features: np.ndarray
    user_cards: tuple[int, ...]
    item_genres: np.ndarray


RANKING_DATA: Registry[Callable[..., Interactions]] = Registry("ranking data set", key="data.name")


def _codes(values: list[str]) -> tuple[np.ndarray, int]:
    """Each distinct text value → 0..n-1 (sorted, so the codes do not depend on row order)."""
    vocab = {v: k for k, v in enumerate(sorted(set(values)))}
    return np.array([vocab[v] for v in values], dtype=np.int64), len(vocab)


def _assemble(inter: list[tuple[str, str, float, float]], users: dict[str, tuple[str, str, str]],
              items: dict[str, list[str]]) -> Interactions:
    """Interactions from raw rows: ids re-indexed densely in their numeric order."""
    user_ids = sorted({u for u, *_ in inter} | set(users), key=int)
    item_ids = sorted({i for _, i, *_ in inter} | set(items), key=int)
    uix, iix = {u: k for k, u in enumerate(user_ids)}, {i: k for k, i in enumerate(item_ids)}
    age = [np.searchsorted(AGE_EDGES, int(users.get(u, ("0", "", ""))[0]), side="right") for u in user_ids]
    gender, n_gender = _codes([users.get(u, ("", "?", ""))[1] for u in user_ids])
    occupation, n_occ = _codes([users.get(u, ("", "", "?"))[2] for u in user_ids])
    features = np.stack([np.array(age, dtype=np.int64), gender, occupation], axis=1)
    genres = np.zeros((len(item_ids), len(GENRES)), dtype=np.float32)
    for item, names in items.items():
        for name in names:
            if name in GENRES:
                genres[iix[item], GENRES.index(name)] = 1.0
    return Interactions(
        users=np.array([uix[u] for u, *_ in inter], dtype=np.int64),
        items=np.array([iix[i] for _, i, *_ in inter], dtype=np.int64),
        ratings=np.array([r for *_, r, _ in inter], dtype=np.float32),
        times=np.array([t for *_, t in inter], dtype=np.float64),
        n_users=len(user_ids), n_items=len(item_ids),
        user_features=features, user_cards=(len(AGE_EDGES) + 1, n_gender, n_occ), item_genres=genres,
    )


def recbole_folder() -> Path | None:
    """``recbole/dataset_example/ml-100k`` of the installed data package, found without importing it."""
    spec = importlib.util.find_spec("recbole")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "dataset_example" / "ml-100k"
        if folder.is_dir():
            return folder
    return None


def read_recbole(folder: Path) -> Interactions:
    """RecBole's atomic files: ml-100k.inter (user, item, rating, timestamp), .user, .item (tab-separated,
    a typed header line; the item's ``class`` is its genres, space-separated)."""
    def rows(name: str) -> list[list[str]]:
        lines = (folder / f"ml-100k.{name}").read_text(encoding="utf-8").splitlines()
        return [line.split("\t") for line in lines[1:] if line]

    inter = [(u, i, float(r), float(t)) for u, i, r, t in rows("inter")]
    users = {row[0]: (row[1], row[2], row[3]) for row in rows("user")}
    # "Children's" is one genre; RecBole's token_seq splits on spaces, so it survives intact.
    items = {row[0]: row[3].split() for row in rows("item")}
    return _assemble(inter, users, items)


def read_grouplens(folder: Path) -> Interactions:
    """GroupLens's files: u.data (user \\t item \\t rating \\t timestamp), u.user (id|age|gender|
    occupation|zip), u.item (id|title|release|video release|url|19 genre flags), Latin-1."""
    inter = [
        (u, i, float(r), float(t))
        for u, i, r, t in (line.split("\t") for line in (folder / "u.data").read_text(encoding="latin-1").splitlines() if line)
    ]
    users = {r[0]: (r[1], r[2], r[3]) for r in (line.split("|") for line in (folder / "u.user").read_text(encoding="latin-1").splitlines() if line)}
    items = {
        r[0]: [g for g, flag in zip(GENRES, r[5:24]) if flag == "1"]
        for r in (line.split("|") for line in (folder / "u.item").read_text(encoding="latin-1").splitlines() if line)
    }
    return _assemble(inter, users, items)


@RANKING_DATA.register("movielens_100k")
def movielens_100k(root: str | None = None, **_: Any) -> Interactions:
    """MovieLens-100K from ``root`` (GroupLens's u.data/u.user/u.item, or RecBole's ml-100k.*), else
    from the installed ``recbole`` data package; a FileNotFoundError naming the files otherwise."""
    if root:
        folder = Path(root).expanduser()
        if all((folder / f).is_file() for f in ("u.data", "u.user", "u.item")):
            return read_grouplens(folder)
        if all((folder / f"ml-100k.{s}").is_file() for s in ("inter", "user", "item")):
            return read_recbole(folder)
        raise FileNotFoundError(
            f"data.root={root!r} has neither GroupLens's MovieLens-100K files (u.data, u.user, u.item) nor "
            f"RecBole's (ml-100k.inter, ml-100k.user, ml-100k.item); {INSTALL_HINT}, or leave data.root=null"
        )
    folder = recbole_folder()
    if folder is None or not (folder / "ml-100k.inter").is_file():
        raise FileNotFoundError(
            "data=movielens_100k found no MovieLens-100K files: data.root is null and the recbole data package "
            f"(recbole/dataset_example/ml-100k/ml-100k.inter, .user, .item) is not installed; {INSTALL_HINT}"
        )
    return read_recbole(folder)


@RANKING_DATA.register("fake_interactions")
def fake_interactions(n_users: int = 64, n_items: int = 120, per_user: int = 12, seed: int = 0, **_: Any) -> Interactions:
    """A seeded synthetic implicit-feedback set for tests: users and items in 4 latent taste groups
    (a user mostly rates items of its own group, so there is something to learn), ratings 1–5,
    side features drawn from the groups, timestamps in order."""
    rng = np.random.default_rng(seed)
    groups = 4
    user_group, item_group = rng.integers(0, groups, n_users), rng.integers(0, groups, n_items)
    users, items = [], []
    for u in range(n_users):
        own = np.flatnonzero(item_group == user_group[u])
        others = np.flatnonzero(item_group != user_group[u])
        take = min(per_user, n_items)
        n_own = min(len(own), int(round(0.8 * take)))
        chosen = np.concatenate([rng.choice(own, n_own, replace=False), rng.choice(others, take - n_own, replace=False)])
        users += [u] * take
        items += list(rng.permutation(chosen))
    n = len(users)
    genres = np.zeros((n_items, len(GENRES)), dtype=np.float32)
    genres[np.arange(n_items), item_group + 1] = 1.0
    return Interactions(
        users=np.array(users, dtype=np.int64), items=np.array(items, dtype=np.int64),
        ratings=rng.integers(1, 6, n).astype(np.float32), times=np.arange(n, dtype=np.float64),
        n_users=n_users, n_items=n_items,
        user_features=np.stack([user_group, rng.integers(0, 2, n_users), rng.integers(0, 5, n_users)], axis=1),
        user_cards=(groups, 2, 5), item_genres=genres,
    )
