"""The registry of methods: ``@register_method("kd")`` on a DistillationModule subclass."""

from __future__ import annotations

from typing import TypeVar

from kdexp.registry import Registry

# Constructor arguments the run layer passes itself; the rest come from the method's Options.
METHODS: Registry = Registry(
    "method", internal=("student", "teacher", "num_classes", "input_shape", "optimizer", "scheduler")
)

C = TypeVar("C", bound=type)


def register_method(name: str):
    """Class decorator: ``method=<name>`` selects the class, which learns its name
    (``cls.method_name``, for error messages)."""

    def decorator(cls: C) -> C:
        cls.method_name = name
        return METHODS.register(name)(cls)

    return decorator
