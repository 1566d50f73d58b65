"""Baseline: no accelerator. The same model, data, budget-aware learning rate; full tokens at a fixed shape.

A run's empty method list is the baseline; naming `baseline` in a list is the same as leaving it out.
"""

from .base import Method
from .registry import register


@register
class Baseline(Method):
    name = "baseline"
    params = {}
