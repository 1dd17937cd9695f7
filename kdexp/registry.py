"""One registry for every pluggable kind: methods, models, datasets, optimizers, schedulers.

A kind keeps one :class:`Registry`; each implementation joins it with a decorator::

    OPTIMIZERS = Registry("optimizer")

    @OPTIMIZERS.register("sgd")
    def sgd(params, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer: ...

``OPTIMIZERS.get(name)`` returns it or raises :class:`UnknownName` naming the config key and the
choices; ``OPTIMIZERS.build(cfg, params)`` calls it with the config's options after checking that
it accepts every key, so a misspelt or misplaced option (``optimizer.betas`` for SGD,
``+data.colour``) is an error that names the key and the accepted ones, not silently ignored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")
TARGET = "_target_"  # Hydra's key for an import path: a user's own model or data (locate)


class UnknownName(ValueError):
    """A name that is not among the registered choices; ``key``, ``name`` and ``choices`` let a
    caller reword it for its own key (e.g. ``teacher.name``)."""

    def __init__(self, key: str, name: Any, choices: Iterable[str]) -> None:
        self.key, self.name, self.choices = key, name, ", ".join(choices)
        super().__init__(f"{key}={name!r} is unknown; choose one of: {self.choices}")


def choose_one_of(key: str, value: Any, choices: Iterable[str]) -> Any:
    """``value`` if it is one of ``choices``, else :class:`UnknownName` (the one place that
    writes "is unknown; choose one of")."""
    choices = list(choices)
    if value not in choices:
        raise UnknownName(key, value, choices)
    return value


def accepted_keys(target: Callable[..., Any]) -> list[str] | None:
    """The keyword arguments ``target`` accepts, in order, following ``**kwargs`` up the class
    hierarchy of a class; None when a plain function takes ``**kwargs`` (anything goes)."""
    if not inspect.isclass(target):
        params = inspect.signature(target).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names: list[str] = []
    for klass in target.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # minus self
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break  # the chain of **kwargs ends here
    return names


class Registry(Generic[T]):
    """Name → implementation for one kind; ``key`` is the config key that names it."""

    def __init__(
        self, kind: str, key: str | None = None, sort: bool = False, internal: Iterable[str] = ()
    ) -> None:
        self.kind, self.key, self.sort = kind, key or f"{kind}.name", sort
        self.internal = frozenset(internal)  # arguments the code passes itself, never a config
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: register the class or function under ``name`` (with optional ``meta``)."""

        def decorator(target: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name], self._meta[name] = target, meta
            return target

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries) if self.sort else list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        choose_one_of(self.key, name, self.names())
        return self._entries[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def accepted(self, name: str, own: Iterable[str] = (), fixed: Iterable[str] = ()) -> list[str] | None:
        """The config keys ``name`` accepts (None: any); ``own`` are keys its caller reads itself,
        ``fixed`` arguments the caller passes."""
        accepted = accepted_keys(self.get(name))  # type: ignore[arg-type]
        if accepted is None:
            return None
        hidden = self.internal | set(fixed)
        return [k for k in accepted if k not in hidden] + [k for k in own if k not in accepted]

    def check_keys(
        self, name: str, options: Mapping[str, Any], own: Iterable[str] = (), fixed: Iterable[str] = ()
    ) -> None:
        """A ValueError if ``options`` holds a key that ``name``'s implementation does not accept."""
        allowed = self.accepted(name, own, fixed)
        if allowed is None:
            return
        unknown = [k for k in options if k not in allowed]
        if unknown:
            prefix = self.key.rsplit(".", 1)[0]
            raise ValueError(
                f"{prefix} {name!r} has no option {', '.join(f'{prefix}.{k}' for k in unknown)}; "
                f"it accepts: {', '.join(allowed) or 'none'}"
            )

    def build(self, cfg: Mapping[str, Any], *args: Any, own: Iterable[str] = (), **fixed: Any) -> Any:
        """``get(cfg["name"])(*args, **options, **fixed)`` with the options checked first; ``own``
        are keys of ``cfg`` that the caller reads itself and that are not passed on."""
        options = {k: v for k, v in cfg.items() if k != "name"}
        name = cfg["name"]
        target = self.get(name)
        self.check_keys(name, options, own, fixed)
        passed = {k: v for k, v in options.items() if k not in set(own)}
        return target(*args, **passed, **fixed)  # type: ignore[operator]


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (recursively), so their registration decorators run:
    a new method, dataset or model is then one new file, with no list to edit."""
    import importlib
    import pkgutil

    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)


def locate(path: str) -> Callable[..., Any]:
    """The object ``path`` (``package.module.Name``, ``package.module.function``) names; a
    ValueError saying why it cannot be imported."""
    if not isinstance(path, str) or not path.strip() or path.startswith(".") or " " in path:
        raise ValueError(f"_target_={path!r} is not an import path such as mymodels.TinyNet")
    import importlib

    parts = path.split(".")
    problem: Exception | None = None
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            problem = problem or err
            prefix = ".".join(parts[:cut])
            if err.name is not None and not (prefix == err.name or prefix.startswith(err.name + ".")):
                raise ValueError(f"_target_={path!r}: importing it failed: {err}") from None  # inside it
            continue
        except Exception as err:  # noqa: BLE001 - the user's module raised while importing
            raise ValueError(f"_target_={path!r}: importing {'.'.join(parts[:cut])} failed: {type(err).__name__}: {err}") from None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ValueError(f"_target_={path!r}: {'.'.join(parts[:cut])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        if not callable(obj):
            raise ValueError(f"_target_={path!r} is a {type(obj).__name__}, not a class or function")
        return obj
    raise ValueError(
        f"_target_={path!r} cannot be imported ({problem}): the folder that holds {parts[0]!r} must be on "
        "PYTHONPATH (e.g. run kdexp from your project folder with PYTHONPATH=.), or the package installed"
    )
