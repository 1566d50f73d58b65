"""Reports of a study: tables, figures and verdicts (`write_report`)."""

from .write import write_report

__all__ = ["write_report"]
