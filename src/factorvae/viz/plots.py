"""The paper's figures as matplotlib (Agg) PNGs, drawn from plain data (no run directories here;
factorvae.report gathers the data):

- ``metric_vs_recon``   Fig. 4 / Fig. 10: metric against reconstruction error, mean ± std over
                        seeds per setting, one line per method through its hyper-parameter values
- ``curves``            Fig. 5 (metric over training), Fig. 7 (TC estimates over training) and
                        reconstruction over training: mean over seeds (± std band) per setting
- ``scatter_with_fit``  Section 6: one metric against another over all trials, with correlations
- ``heatmap``           a labelled matrix: DCI importances and MIG's mutual information (latents x
                        factors, as dlib's ``visualize_scores``), the rank correlation between metrics
                        (Locatello et al. 2019, Fig. 2 style)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METHOD_COLORS = {"factorvae": "#1f77b4", "betavae": "#d62728", "vae": "#7f7f7f", "betatcvae": "#2ca02c",
                 "aae": "#8c564b"}
_FALLBACK = ["#17becf", "#bcbd22", "#ff7f0e", "#9edae5", "#c5b0d5"]


def method_color(method: str, i: int = 0) -> str:
    return METHOD_COLORS.get(method, _FALLBACK[i % len(_FALLBACK)])


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_vs_recon(points: list[dict], path: Path, ylabel: str = "FactorVAE metric", title: str | None = None,
                    xlabel: str = "reconstruction error (nats / image)") -> Path:
    """``points``: one per setting: method, label (e.g. "γ=40"), order (hyper-parameter value,
    for the line), recon_mean/std, metric_mean/std, n. Error bars are ± one std over seeds."""
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    methods = list(dict.fromkeys(p["method"] for p in points))
    for i, m in enumerate(methods):
        pts = sorted((p for p in points if p["method"] == m), key=lambda p: (p.get("order") is None, p.get("order") or 0))
        x = np.array([p["recon_mean"] for p in pts], dtype=float)
        y = np.array([p["metric_mean"] for p in pts], dtype=float)
        xe = np.array([p.get("recon_std") or 0.0 for p in pts], dtype=float)
        ye = np.array([p.get("metric_std") or 0.0 for p in pts], dtype=float)
        c = method_color(m, i)
        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o-", color=c, ecolor=c, elinewidth=1, capsize=3, ms=5,
                    label=pts[0].get("method_label", m), alpha=0.9)
        for p, xi, yi in zip(pts, x, y):
            ax.annotate(p["label"], (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8, color=c)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(fontsize=8)
    return _save(fig, path)


def curves(series: list[dict], path: Path, ylabel: str, title: str | None = None, xlabel: str = "training step",
           logy: bool = False) -> Path:
    """``series``: label, steps, mean, optional std (band), color, linestyle."""
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for i, s in enumerate(series):
        steps = np.asarray(s["steps"], dtype=float)
        mean = np.asarray(s["mean"], dtype=float)
        if not len(steps):
            continue
        c = s.get("color") or _FALLBACK[i % len(_FALLBACK)]
        ax.plot(steps, mean, s.get("linestyle", "-"), color=c, label=s["label"], lw=1.5, marker="." if len(steps) < 30 else None)
        if s.get("std") is not None:
            std = np.asarray(s["std"], dtype=float)
            ax.fill_between(steps, mean - std, mean + std, color=c, alpha=0.15, lw=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("symlog", linthresh=1e-2)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    return _save(fig, path)


def scatter_with_fit(x, y, methods: list[str], path: Path, xlabel: str, ylabel: str, note: str | None = None) -> Path:
    """Every trial as a point (coloured by method), with a least-squares line and a note
    (e.g. the correlation coefficients)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for i, m in enumerate(dict.fromkeys(methods)):
        sel = np.array([mm == m for mm in methods])
        ax.scatter(x[sel], y[sel], s=18, color=method_color(m, i), label=m, alpha=0.8)
    if len(x) >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 20)
        ax.plot(xs, a * xs + b, "k--", lw=1, alpha=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if note:
        ax.set_title(note, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def box_grid(panels: list[tuple[str, dict[str, list[float]]]], path: Path, title: str | None = None) -> Path:
    """Locatello et al. (2019), Figs. 2-3 style: one panel per metric, one box per method over
    its trials (every hyper-parameter value and seed)."""
    cols = min(4, max(1, len(panels)))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, groups) in zip(axes.flat, panels):
        names = list(groups)
        box = ax.boxplot([groups[n] for n in names], patch_artist=True, widths=0.6)
        for i, (patch, n) in enumerate(zip(box["boxes"], names)):
            patch.set_facecolor(method_color(n, i))
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def heatmap(matrix, row_labels: list[str], col_labels: list[str], path: Path, title: str | None = None,
            colorbar: str | None = None, vmin: float | None = None, vmax: float | None = None,
            cmap: str = "viridis", annotate: bool = True) -> Path:
    """A matrix as coloured cells with its row and column labels (and each value written in its
    cell when ``annotate``); NaN cells are left blank."""
    m = np.asarray(matrix, dtype=float)
    rows, cols = m.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.62 * cols + 0.9, 1.0 + 0.38 * rows + 0.6))
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(cols), col_labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(rows), row_labels, fontsize=8)
    if annotate:
        lo, hi = (np.nanmin(m), np.nanmax(m)) if np.isfinite(m).any() else (0.0, 1.0)
        mid = (lo + hi) / 2 if vmin is None or vmax is None else (vmin + vmax) / 2
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if m[i, j] < mid else "black")
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03)
    if colorbar:
        cb.set_label(colorbar, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)
