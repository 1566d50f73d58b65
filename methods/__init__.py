"""The method registry: every training accelerator under its short name.

Add a method: write methods/NAME.py with a `Method` subclass decorated with `@register` (vtbench.methods.registry),
declare its parameters in its `params` table (vtbench.methods.params), import it below.
"""

from . import baseline, control, flux, frozen_spatial, multigrid, placebo, pss, rlt, token_dropout, tome  # noqa: F401  (registers)
from .base import EvalSetting, Method, MethodStack, RunContext
from .params import Param, parameters
from .registry import (
                       REGISTRY,
                       build_method,
                       build_methods,
                       check_methods,
                       check_spec,
                       identity_params,
                       method_class,
                       register,
)

__all__ = ["REGISTRY", "EvalSetting", "Method", "MethodStack", "Param", "RunContext", "build_method",
           "build_methods", "check_methods", "check_spec", "identity_params", "method_class", "parameters", "register"]
