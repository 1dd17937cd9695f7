"""A user's own model, in Hydra's idiom: a model config naming an importable callable.

    # <config dir>/student/tinynet.yaml
    name: tinynet                       # its row in tables and reports
    _target_: mymodels.TinyNet          # any callable returning an nn.Module (a class, a function)
    num_classes: ${data.num_classes}    # its keyword arguments, beside it
    in_channels: ${data.input_shape[0]}
    stages: [block1, block2]            # optional: feature stages (module paths, shallow → deep)
    classifier: head                    # optional: the final nn.Linear (default: the last one)

Measured, saved and reloaded like a built-in model: its card (kdexp.models.card) keeps this
config, so ``kdexp-eval`` and ``kdexp.load_student`` import ``_target_`` again.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kdexp.registry import TARGET, accepted_keys, locate
# Keys of a python model config that kdexp reads itself (never passed to the callable).
OWN_KEYS = {TARGET, "name", "source", "stages", "classifier"}


def call_target(cfg: dict[str, Any], own: set[str], kind: str) -> Any:
    """``_target_(**options)``: the options a config gives beside ``_target_`` (minus ``own``), each
    checked against the callable's signature first."""
    target = locate(cfg[TARGET])
    options = {k: v for k, v in cfg.items() if k not in own}
    accepted = accepted_keys(target)
    unknown = sorted(set(options) - set(accepted)) if accepted is not None else []
    if unknown:
        raise ValueError(
            f"{kind} _target_={cfg[TARGET]!r} takes no argument {', '.join(unknown)}; it accepts: {', '.join(accepted) or 'none'}"
        )
    try:
        return target(**options)
    except TypeError as err:  # e.g. a required argument the config does not give
        raise ValueError(f"{kind} _target_={cfg[TARGET]!r} could not be called with {sorted(options)}: {err}") from None


def build_python_model(cfg: dict[str, Any], num_classes: int, not_options: set[str]) -> tuple[nn.Module, tuple[str, ...], str]:
    """(module, feature stages, classifier path) of a ``_target_`` model config."""
    if not cfg.get("name"):
        raise ValueError(
            f"_target_={cfg[TARGET]!r}: the model config needs a name (name: <its row in the results>), e.g. "
            f"name: {str(cfg[TARGET]).rsplit('.', 1)[-1].lower()}"
        )
    module = call_target(cfg, OWN_KEYS | not_options, "model")
    if not isinstance(module, nn.Module):
        raise ValueError(f"_target_={cfg[TARGET]!r} returned a {type(module).__name__}, not a torch.nn.Module")
    stages = tuple(str(s) for s in cfg.get("stages") or ())
    for key, paths in (("stages", stages), ("classifier", (cfg["classifier"],) if cfg.get("classifier") else ())):
        for path in paths:
            try:
                module.get_submodule(str(path))
            except AttributeError:
                names = [n for n, _ in module.named_modules() if n][:30]
                raise ValueError(f"{key}: {cfg[TARGET]} has no module {path!r}; its modules are: {', '.join(names)}") from None
    classifier = str(cfg.get("classifier") or _last_linear(module, cfg[TARGET]))
    head = module.get_submodule(classifier)
    if isinstance(head, nn.Linear) and head.out_features != num_classes:
        raise ValueError(
            f"{cfg[TARGET]}: its classifier {classifier!r} has {head.out_features} outputs but the data has "
            f"{num_classes} classes; pass num_classes: ${{data.num_classes}}"
        )
    return module, stages, classifier


def _last_linear(module: nn.Module, target: str) -> str:
    paths = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not paths:
        raise ValueError(f"{target} has no nn.Linear; name its final layer: classifier: <module path>")
    return paths[-1]
