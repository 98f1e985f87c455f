"""Every metric, one line each: ``RECORDS[name]`` is its :class:`~factorvae.metrics.record.Metric`.

The suite, the plan, the report, export and the CLI read metric facts only from here. Adding a
metric: its module (function + ``METRIC``) and one line below. The order is the order of
tables, JSON and the report.
"""

from __future__ import annotations

from factorvae.metrics import beta_vae, dci, factor_vae, mig, modularity, sap
from factorvae.metrics.record import Metric

RECORDS: dict[str, Metric] = {m.name: m for m in (
    factor_vae.METRIC,
    beta_vae.METRIC,
    mig.METRIC,
    dci.METRIC,
    sap.METRIC,
    modularity.METRIC,
)}
