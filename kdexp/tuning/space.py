"""A search space: Hydra sweep overrides (``interval(1.0, 10.0)``, ``tag(log, interval(1e-3, 1))``,
``tag(int, interval(2, 8))``, ``choice(a, b)``, ``range(1, 5)``) as Optuna distributions, and ``search=auto``'s space: the
ranges a method declares on its options (``search=`` in its Options) plus the optimiser's learning
rate and weight decay.
"""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

# The optimiser's keys hparams_search=auto adds, searched a decade either side of the configured
# value on a log scale (a value of 0 is not searched: there is no scale to search around).
OPTIMISER_KEYS = ("optimizer.lr", "optimizer.weight_decay")
DECADES = 1.0


def interval(low: float, high: float, log: bool = False) -> str:
    """The Hydra sweep override for a float range: ``interval(a, b)`` or ``tag(log, interval(a, b))``."""
    text = f"interval({float(low)!r}, {float(high)!r})"
    return f"tag(log, {text})" if log else text


def method_space(method_cls: type) -> dict[str, str]:
    """``{"method.<option>": <interval override>}`` for every option the method declares a
    ``search=`` range for (kdexp.methods.search_space)."""
    from kdexp.methods import search_space

    return {key: interval(rng[0], rng[1], len(rng) > 2 and rng[2] == "log") for key, rng in search_space(method_cls.Options).items()}


def optimiser_space(optimizer: Mapping[str, Any]) -> dict[str, str]:
    """The optimiser's learning rate and weight decay, a decade either side of their values."""
    space = {}
    for key in OPTIMISER_KEYS:
        value = optimizer.get(key.split(".", 1)[1])
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            space[key] = interval(value / 10**DECADES, value * 10**DECADES, log=True)
    return space


def auto_space(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """``search=auto``'s space for a composed run config: the chosen method's declared ranges plus
    the optimiser's learning rate and weight decay."""
    from kdexp.methods import method_class

    method = OmegaConf.select(cfg, "method.name") if isinstance(cfg, DictConfig) else cfg["method"]["name"]
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True) if isinstance(cfg, DictConfig) else cfg["optimizer"]
    return {**method_space(method_class(str(method))), **optimiser_space(optimizer)}


def distributions(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Optuna distributions for the sweep overrides among ``overrides`` (``key=interval(...)``),
    and the other overrides, passed to every trial unchanged. A ValueError names a sweep that
    Optuna cannot search."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override, text in zip(OverridesParser.create().parse_overrides(overrides), overrides):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(text)
            continue
        value = override.value()
        if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            space[key] = CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        elif override.is_range_sweep():
            ints = all(isinstance(v, int) for v in (value.start, value.stop, value.step))
            last = value.stop - value.step  # range() excludes its stop
            space[key] = (IntDistribution(int(value.start), int(last), step=int(value.step)) if ints
                          else FloatDistribution(value.start, last, step=value.step))
        elif override.is_interval_sweep():
            log = "log" in value.tags
            if "int" in value.tags:  # Hydra's intervals are floats; tag(int, interval(2, 8)) searches integers
                space[key] = IntDistribution(int(value.start), int(value.end), log=log)
            else:
                space[key] = FloatDistribution(float(value.start), float(value.end), log=log)
        else:
            raise ValueError(f"{text}: Optuna searches choice(...), range(...) and interval(...) only")
    return space, fixed


def override(key: str, value: Any) -> str:
    """A trial's value as a Hydra override (``method.temperature=5.49``)."""
    return f"{key}={value!r}" if isinstance(value, str) and not value.isidentifier() else f"{key}={value}"
