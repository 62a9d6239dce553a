"""Text tables and PNG plots of an evaluation result."""

from __future__ import annotations

import math
from pathlib import Path

from offline.evaluation.harness import EvaluationResult

__all__ = ["format_table", "plot_curves"]

CURVE_METRICS = ("ndcg", "recall", "precision", "hit_rate", "map")


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def format_table(result: EvaluationResult) -> str:
    """A Markdown table: one row per model, the metrics at ``result.k``.

    >>> r = EvaluationResult("d", "temporal", 10, (10,), {"pop": {"ndcg@10": 0.5}})
    >>> print(format_table(r).splitlines()[2])
    | pop | 0.5000 | - | - | - | - | - | - | - | - | - | - | - |
    """
    k = result.k
    cols = [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"f1@{k}", f"map@{k}",
            f"hit_rate@{k}", "coverage", "novelty", "rmse", "mae", "fit_s", "predict_s"]
    lines = ["| model | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, res in result.metrics.items():
        lines.append(f"| {name} | " + " | ".join(_cell(res.get(c)) for c in cols) + " |")
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
