"""Text tables and PNG plots of an evaluation result."""

from __future__ import annotations

import math
from pathlib import Path

from offline.evaluation.harness import EvaluationResult

__all__ = ["format_table", "format_tuning", "plot_curves"]

CURVE_METRICS = ("ndcg", "recall", "precision", "hit_rate", "map")


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def format_table(result: EvaluationResult) -> str:
    """A Markdown table: one row per model, the metrics at ``result.k``; a skipped model
    gets a row that says why.

    >>> r = EvaluationResult("d", "temporal", 10, (10,), {"pop": {"ndcg@10": 0.5}},
    ...                      {"content": "no item text"})
    >>> print(format_table(r).splitlines()[2])
    | pop | 0.5000 | - | - | - | - | - | - | - | - | - | - | - |
    >>> print(format_table(r).splitlines()[3])
    | content | skipped: no item text |
    """
    k = result.k
    cols = [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"f1@{k}", f"map@{k}",
            f"hit_rate@{k}", "coverage", "novelty", "rmse", "mae", "fit_s", "predict_s"]
    lines = ["| model | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, res in result.metrics.items():
        lines.append(f"| {name} | " + " | ".join(_cell(res.get(c)) for c in cols) + " |")
    for name, reason in result.errors.items():
        if name not in result.metrics:
            lines.append(f"| {name} | skipped: {reason} |")
    return "\n".join(lines)


def format_tuning(result: EvaluationResult) -> str:
    """One line per self-tuning model and split: what its validation split chose.

    >>> r = EvaluationResult("d", "temporal", 10, (10,),
    ...                      params={"ease": {"temporal": {"l2": 316.2}}})
    >>> print(format_tuning(r))
    ease (temporal): l2=316.2
    """
    lines = []
    for name, per_split in result.params.items():
        for split, report in per_split.items():
            shown = {k: v for k, v in report.items()
                     if k in ("l2", "weights", "fallback", "dropped", "k")}
            comps = report.get("components", {})
            shown.update({f"{c}.l2": r["l2"] for c, r in comps.items() if "l2" in r})
            lines.append(f"{name} ({split}): " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return "\n".join(lines)


def plot_curves(result: EvaluationResult, out_dir: Path, prefix: str = "") -> list[Path]:
    """One PNG per metric: the metric against k, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in CURVE_METRICS:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, res in result.metrics.items():
            ks = [k for k in result.ks if f"{metric}@{k}" in res]
            ax.plot(ks, [res[f"{metric}@{k}"] for k in ks], marker="o", label=name)
        for name, reason in result.errors.items():
            if name not in result.metrics:  # in the legend, so a reader sees it was skipped
                ax.plot([], [], linestyle="none", label=f"{name}: skipped ({reason})")
        ax.set_xlabel("k")
        ax.set_ylabel(f"{metric}@k")
        ax.set_title(f"{result.dataset} ({result.protocol}): {metric}@k")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        path = out_dir / f"{prefix}{metric}_at_k.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
