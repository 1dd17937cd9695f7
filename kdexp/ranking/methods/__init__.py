"""How a student ranker learns: one file per method, each a :class:`RankingMethod` registered with
``@register_ranking_method("<name>")`` and declaring its Options (with their published defaults)
and its ``teacher_use``, as the image methods do (kdexp.methods), so the run layer reads the same
declarations. ``choose_method`` parses a config's ``method`` once."""

from __future__ import annotations

from typing import Any

from kdexp.methods import MethodChoice
from kdexp.methods.options import parse_options
from kdexp.ranking.methods.base import RANKING_METHODS, RankingMethod, register_ranking_method
from kdexp.registry import import_submodules

# The student alone first (the order `choose one of` lists them in), then every other module.
from kdexp.ranking.methods.vanilla import VanillaRanking  # noqa: E402, I001

import_submodules(__name__)


def choose_method(cfg: dict[str, Any]) -> MethodChoice:
    """The ranking method ``cfg['name']`` names, its other keys parsed as its options; a ValueError
    naming the unknown method (and the ranking methods there are) or option."""
    values = dict(cfg)
    name = values.pop("name")
    if name not in RANKING_METHODS:
        raise ValueError(
            f"method={name!r} is not a ranking method; task=ranking takes method=<one of: "
            f"{', '.join(RANKING_METHODS.names())}>"
        )
    cls = RANKING_METHODS.get(name)
    return MethodChoice(cls, parse_options(cls.Options, values, name), tuple(values))


__all__ = ["RANKING_METHODS", "RankingMethod", "VanillaRanking", "choose_method", "register_ranking_method"]
