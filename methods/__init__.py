"""The method registry: every training accelerator under its short name.

Add a method: write methods/NAME.py with a `Method` subclass decorated with `@register`, import it below.
"""

import inspect

from vtbench.engine.config import MethodSpec
from vtbench.errors import ConfigError

from .base import EvalSetting, Method, MethodStack, RunContext

REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name`")
    REGISTRY[cls.name] = cls
    return cls


def parameters(cls: type[Method]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}


def build_method(spec: MethodSpec) -> Method:
    if spec.name not in REGISTRY:
        raise ConfigError(f"unknown method {spec.name!r}; known: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[spec.name]
    allowed = parameters(cls)
    unknown = sorted(set(spec.params) - set(allowed))
    if unknown:
        listed = ", ".join(allowed) or "none"
        raise ConfigError(f"method {spec.name!r} has no parameter {', '.join(unknown)}; its parameters: {listed}")
    try:
        return cls(**spec.params)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"method {spec.name!r}: {err}") from None


def build_methods(specs: list[MethodSpec]) -> MethodStack:
    return MethodStack([build_method(s) for s in specs])


from . import baseline, control, flux, frozen_spatial, multigrid, placebo, pss, rlt, token_dropout, tome  # noqa: E402,F401  (registers)

__all__ = ["REGISTRY", "EvalSetting", "Method", "MethodStack", "RunContext", "build_method", "build_methods",
           "register"]
