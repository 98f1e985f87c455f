"""Every metric, one line each: ``RECORDS[name]`` is its :class:`~factorvae.metrics.record.Metric`.

The suite, the plan, the report, export and the CLI read metric facts only from here. Adding a
metric: its module (function + ``METRIC``) and one line below. The order is the order of
tables, JSON and the report.
"""

from __future__ import annotations

from factorvae.metrics import (beta_vae, dci, downstream, factor_vae, fairness, irs, mig, modularity,
                               reduced_downstream, sap, strong_downstream, unsupervised)
from factorvae.metrics.record import Metric

RECORDS: dict[str, Metric] = {m.name: m for m in (
    factor_vae.METRIC,
    beta_vae.METRIC,
    mig.METRIC,
    dci.METRIC,
    sap.METRIC,
    modularity.METRIC,
    irs.METRIC,
    unsupervised.METRIC,
    downstream.METRIC_LOGREG,
    downstream.METRIC_BOOST,
    fairness.METRIC,
    strong_downstream.METRIC,
    reduced_downstream.METRIC,
)}
