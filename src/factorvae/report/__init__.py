"""The sweep report: statistics of result rows (``stats``), a small document model
(``document``) and the page itself, one function per section (``build``). Reads a sweep
directory; writes only under its report directory."""

from factorvae.report.build import build_report
from factorvae.report.stats import compare_methods, correlations, settings_table

__all__ = ["build_report", "compare_methods", "correlations", "settings_table"]
