"""The method registry: every training accelerator under its short name, and specs checked against it."""

import inspect
from typing import Any

from vtbench.core.spec import MethodSpec
from vtbench.errors import ConfigError

from .base import Method, MethodStack
from .params import NOTHING, parameters

REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a `name`")
    if cls.params is not None:  # the declaration and the constructor name the same parameters, with one default
        signature = parameters(cls)
        if list(signature) != list(cls.params):
            raise TypeError(f"{cls.__name__}.params declares {', '.join(cls.params) or 'none'}; its __init__ takes "
                            f"{', '.join(signature) or 'none'}")
        for key, param in cls.params.items():
            default = signature[key].default
            if default is inspect.Parameter.empty or type(default) is not type(param.default) \
                    or default != param.default:
                raise TypeError(f"{cls.__name__}: {key} defaults to {default!r} in __init__ but to "
                                f"{param.default!r} in params")
            param.validate(key, param.default)  # a default the declaration refuses is a mistake in it
    REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def check_spec(spec: MethodSpec) -> dict[str, Any]:
    """The constructor's arguments for `spec`, checked against the method's declaration (`Method.params`): its
    values converted, defaults filled in. A method without a declaration (one a test defines) has its names
    checked against its constructor, which checks the values itself."""
    cls = method_class(spec.name)
    allowed = list(cls.params) if cls.params is not None else list(parameters(cls))
    unknown = sorted(str(k) for k in set(spec.params) - set(allowed))
    if unknown:
        listed = ", ".join(allowed) or "none"
        raise ConfigError(f"method {spec.name!r} has no parameter {', '.join(unknown)}; its parameters: {listed}")
    if cls.params is None:
        return dict(spec.params)
    try:
        values = {key: param.validate(key, spec.params[key]) if key in spec.params else param.default
                  for key, param in cls.params.items()}
        cls.check_together(values)
    except ValueError as err:
        raise ConfigError(f"method {spec.name!r}: {err}") from None
    return values


def check_methods(specs: list[MethodSpec]) -> None:
    """Every spec against its method's declaration, building nothing (`RunConfig.resolve` calls it)."""
    for spec in specs:
        check_spec(spec)


def identity_params(spec: MethodSpec) -> dict[str, Any]:
    """The parameters a run id holds for `spec`: those given, and those whose default changed since runs were made
    (`Param.previously`) at the value in effect, unless it is the earlier one."""
    cls = method_class(spec.name)
    values = dict(spec.params)
    for key, param in (cls.params or {}).items():
        if param.previously is NOTHING:
            continue
        value = values.get(key, param.default)
        if value == param.previously:
            values.pop(key, None)
        else:
            values[key] = value
    return values


def build_method(spec: MethodSpec) -> Method:
    values = check_spec(spec)
    try:
        return method_class(spec.name)(**values)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"method {spec.name!r}: {err}") from None


def build_methods(specs: list[MethodSpec]) -> MethodStack:
    return MethodStack([build_method(s) for s in specs])
