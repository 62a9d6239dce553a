"""``streamrec train`` and ``streamrec evaluate``: thin click wrappers over ``offline``."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.errors import StreamrecError
from core.scoring import Scorer
from core.settings import Settings
from offline.datasets import DATASETS, Dataset, load_dataset
from offline.evaluation.harness import DEFAULT_KS, evaluate
from offline.evaluation.protocols import PROTOCOLS
from offline.evaluation.report import format_table, plot_curves
from offline.models.neural import NEURAL_MODELS, torch_missing
from offline.models.registry import MODELS
from offline.spark import DEFAULT_MASTER, require_pyspark
from offline.train import Fitted, TrainResult, publish, train

__all__ = ["archive_group", "evaluate_command", "train_command"]

IMPLICIT_MODELS = ("popularity", "trending", "item_knn", "als", "ease", "content", "hybrid",
                   "ranker", "served")
RATING_MODELS = ("rating_mf", "svd", "biased_als", "item_knn_baseline", "rating_blend")
DEFAULT_PROTOCOL = {"online-retail": "temporal", "amazon-scientific": "leave-one-out",
                    "ml-100k": "kfold", "csv": "temporal", "archive": "temporal"}
#: Besides the data sets, training reads the events the consumers archived in SQL.
ARCHIVE = "archive"
TRAIN_MODELS = ("popularity", "item_knn", "als", "ease", "content", "hybrid")


def _served(protocol: str = "temporal", random_state: int = 0) -> Scorer:
    from infra.served import ServedModel

    return ServedModel(protocol=protocol, random_state=random_state, settings=Settings())


#: Models wired by infra (the API's own pipeline), evaluated beside the registry's.
SERVING_MODELS = {"served": _served}


def _train_models() -> list[str]:
    """The default training set: the sequential model too where PyTorch is installed."""
    return [*TRAIN_MODELS, *(NEURAL_MODELS if torch_missing() is None else ())]


def _load(dataset: str, data: str | None, items: str | None) -> Dataset:
    if dataset == ARCHIVE:
        from infra.bootstrap import archive_dataset

        return archive_dataset(Settings())
    if dataset == "online-retail" and data is None:
        data = str(Settings().data_dir)
    return load_dataset(dataset, data, items)


def _model_list(models: str | None, dataset: Dataset) -> list[str]:
    if not models:
        return list(RATING_MODELS if dataset.interactions.is_rating else IMPLICIT_MODELS)
    names = [m.strip() for m in models.split(",") if m.strip()]
    known = {*MODELS, *SERVING_MODELS}
    unknown = [m for m in names if m not in known]
    if unknown:
        raise click.BadParameter(f"unknown models {unknown}; choose from {sorted(known)}",
                                 param_hint="--models")
    return names


@click.command("evaluate")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="online-retail",
              show_default=True)
@click.option("--data", type=click.Path(), default=None,
              help="Data set folder or file (csv: the interactions file).")
@click.option("--items", type=click.Path(), default=None, help="csv only: item_id,text file.")
@click.option("--models", default=None, help="Comma-separated model names (default: all).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=None,
              help="Split protocol (default per data set).")
@click.option("--k", "k", type=int, default=10, show_default=True)
@click.option("--folds", type=int, default=5, show_default=True, help="kfold only.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="temporal only: share of events (latest) held out.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(), default=None,
              help="Write model -> metrics JSON here.")
@click.option("--plots", "plots_dir", type=click.Path(), default=None,
              help="Folder for metric-vs-k PNGs (default: next to --json).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--replay", is_flag=True, default=False,
              help="Prequential replay through Kafka -> consumers -> Redis: a static batch "
                   "model vs. the same with streaming updates (see cli/replay_eval.py).")
@click.option("--stream-events", type=int, default=5_000, show_default=True,
              help="--replay: how many of the latest events are replayed.")
@click.option("--chunk", type=int, default=100, show_default=True,
              help="--replay: events produced at a time (scored before they are produced).")
def evaluate_command(dataset: str, data: str | None, items: str | None, models: str | None,
                     protocol: str | None, k: int, folds: int, test_fraction: float, seed: int,
                     json_out: str | None, plots_dir: str | None, progress: bool,
                     replay: bool, stream_events: int, chunk: int) -> None:
    """Evaluate models offline with full ranking and print a table.

    With --replay, run the prequential replay instead (static vs streaming models).
    """
    if replay:
        _evaluate_replay(dataset, data, items, k, stream_events, chunk, json_out, progress)
        return
    try:
        ds = _load(dataset, data, items)
        names = _model_list(models, ds)
        proto = protocol or DEFAULT_PROTOCOL[dataset]
        t0 = time.perf_counter()
        result = evaluate(ds, names, protocol=proto, k=k, ks=tuple(sorted({*DEFAULT_KS, k})),
                          n_folds=folds, test_fraction=test_fraction, random_state=seed,
                          progress=progress, extra_models=SERVING_MODELS)
    except StreamrecError as exc:
        raise click.ClickException(exc.message) from exc
    elapsed = time.perf_counter() - t0
    click.echo(f"{ds.name}: {len(ds.interactions)} events, {len(ds.items)} items, "
               f"protocol {proto} ({', '.join(result.info['splits'])}), "
               f"{elapsed:.1f} s")
    click.echo(format_table(result))
    for name, message in result.errors.items():
        click.echo(f"skipped {name}: {message}", err=True)
    if json_out:
        out = Path(json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_json(), indent=2, sort_keys=True))
        click.echo(f"wrote {out}")
    folder = Path(plots_dir) if plots_dir else (Path(json_out).parent if json_out else None)
    if folder is not None and result.metrics:
        prefix = f"{ds.name}_{proto}_"
        for path in plot_curves(result, folder, prefix):
            click.echo(f"wrote {path}")


def _evaluate_replay(dataset: str, data: str | None, items: str | None, k: int,
                     stream_events: int, chunk: int, json_out: str | None,
                     progress: bool) -> None:
    from cli.replay_eval import run_replay

    try:
        ds = _load(dataset, data, items)
        report = run_replay(ds, stream_events=stream_events, chunk=chunk, k=k,
                            progress=progress)
    except StreamrecError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{ds.name}: trained on {report['train_events']} events, replayed "
               f"{report['stream_events']} through Kafka -> consumers -> Redis "
               f"(chunks of {chunk}) in {report['replay_seconds']} s")
    for title, rows in (("all scored events", report["models"]),
                        ("users the batch model knows", report["models_known_users"])):
        click.echo(f"\n{title}:\n{'model':<18} {f'hit_rate@{k}':>12} {f'ndcg@{k}':>10} events")
        for name, m in rows.items():
            click.echo(f"{name:<18} {m[f'hit_rate@{k}']:>12.4f} {m[f'ndcg@{k}']:>10.4f} "
                       f"{int(m['events'])}")
    if json_out:
        out = Path(json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True))
        click.echo(f"wrote {out}")


#: Training engines: this process (every model) or Spark MLlib (ALS, into the same artifact).
ENGINES = ("python", "spark")


@click.command("train")
@click.option("--dataset", type=click.Choice([*sorted(DATASETS), ARCHIVE]),
              default="online-retail", show_default=True,
              help="A data set, or `archive`: the events the consumers stored in SQL.")
@click.option("--data", type=click.Path(), default=None)
@click.option("--items", type=click.Path(), default=None)
@click.option("--models", default=None,
              help=f"Comma-separated models [default: {','.join(TRAIN_MODELS)}, plus "
                   f"{','.join(NEURAL_MODELS)} when the neural extra is installed; "
                   "with --engine spark: als, the only model Spark trains].")
@click.option("--state-dir", type=click.Path(), default=None,
              help="Artifacts go to STATE_DIR/artifacts (default: settings).")
@click.option("--evaluate/--no-evaluate", "run_eval", default=False, show_default=True,
              help="Also evaluate the models and store the metrics in the manifest.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="python", show_default=True,
              help="spark: ALS on Spark MLlib (needs the `spark` extra), published as `als`.")
@click.option("--master", default=None,
              help="--engine spark: local[*] (default), local[N] or spark://HOST:PORT.")
@click.option("--parquet", "parquet", type=click.Path(file_okay=False), default=None,
              help="--engine spark: train from this Parquet export (`streamrec archive "
                   "export`) instead of --dataset; on a cluster, a path every executor reads.")
@click.option("--factors", type=click.IntRange(min=1), default=None,
              help="--engine spark: ALS rank [default: 64, as the python ALS].")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="--engine spark: ALS sweeps [default: 15, as the python ALS].")
@click.option("--ranker/--no-ranker", default=True, show_default=True,
              help="Also learn how the live pipeline combines its sources (the learned "
                   "ranker the API serves), on a validation slice of the data.")
def train_command(dataset: str, data: str | None, items: str | None, models: str | None,
                  state_dir: str | None, run_eval: bool, seed: int, engine: str,
                  master: str | None, parquet: str | None, factors: int | None,
                  iterations: int | None, ranker: bool) -> None:
    """Fit the batch models and publish a new artifact version."""
    settings = Settings()
    artifacts = (Path(state_dir) / "artifacts") if state_dir else settings.artifacts_dir
    if engine != "spark" and (master or parquet or factors or iterations):
        raise click.UsageError(
            "--master, --parquet, --factors and --iterations go with --engine spark")
    try:
        if engine == "spark":
            spark_params = {"factors": factors, "iterations": iterations}
            result = _train_on_spark(
                dataset, data, items, models, artifacts, run_eval, seed,
                master or DEFAULT_MASTER, parquet,
                {k: v for k, v in spark_params.items() if v is not None})
        else:
            ds = _load(dataset, data, items)
            names = _model_list(models, ds) if models else _train_models()
            proto = DEFAULT_PROTOCOL[dataset]
            serving = [n for n in names if n in SERVING_MODELS]
            names = [n for n in names if n not in SERVING_MODELS]
            metrics = (evaluate(ds, [*names, *serving], protocol=proto, random_state=seed,
                                progress=False, extra_models=SERVING_MODELS).metrics
                       if run_eval else None)
            extras: dict[str, Callable[[Path], dict[str, Any]]] = {}
            if ranker:
                from infra.served import RankerTraining, world_trains_sequential

                # Where the ranker's world trains the sequential network, that network
                # ships (see RankerTraining): SASRec is not trained a second time.
                keep = "sasrec" in names and world_trains_sequential(
                    Settings(), len(ds.interactions))
                training = RankerTraining(Settings(), ds, protocol=proto, random_state=seed,
                                          keep_sequential=keep)
                extras["ranker"] = training.write_ranker
                if keep:
                    names = [n for n in names if n != "sasrec"]
                    extras["sasrec"] = training.write_sequential
            result = train(ds, artifacts, names, metrics=metrics, protocol=proto,
                           random_state=seed, extras=extras)
    except StreamrecError as exc:
        raise click.ClickException(exc.message) from exc
    manifest = result.manifest
    click.echo(f"trained {', '.join(manifest['models'])} on {manifest['dataset']} "
               f"({manifest['events']} events) -> {result.path}")
    click.echo(f"version {result.version} (data sha256 {manifest['data_sha256'][:12]})")
    if "ranker" in manifest["models"]:
        entry = manifest["models"]["ranker"]
        click.echo(f"sources combined by: {entry['info'].get('chosen')} "
                   f"(validation NDCG {entry['info'].get('validation_ndcg')})")


def _train_on_spark(dataset: str, data: str | None, items: str | None, models: str | None,
                    artifacts: Path, run_eval: bool, seed: int, master: str,
                    parquet: str | None, params: dict[str, int]) -> TrainResult:
    """ALS on Spark into the `als` slot, which the API and consumers load (same format)."""
    if models not in (None, "als"):
        raise click.BadParameter("the spark engine trains `als` only", param_hint="--models")
    if run_eval and (parquet or params):
        raise click.UsageError("--evaluate measures spark_als on --dataset at its defaults "
                               "(not with --parquet, --factors or --iterations)")
    require_pyspark()
    from offline.models.spark_als import SparkALSScorer
    from offline.parquet_log import folder_sha256
    from offline.spark import spark_session

    extra = {"engine": "spark", "master": master}
    proto = DEFAULT_PROTOCOL[dataset]
    # One session for the whole command (fits and evaluation reuse it), stopped after.
    with spark_session(master):
        if parquet is None:
            ds = _load(dataset, data, items)
            metrics = _spark_metrics(ds, proto, seed) if run_eval else None
            return train(ds, artifacts, ["als"], metrics=metrics, protocol=proto,
                         random_state=seed, extra=extra,
                         make=lambda _name, **ctx: SparkALSScorer(
                             random_state=ctx["random_state"], master=master, **params))
        model = SparkALSScorer(random_state=seed, master=master, **params)
        t0 = time.perf_counter()
        rows = model.fit_parquet(parquet)
        fitted = {"als": Fitted(model, time.perf_counter() - t0)}
    return publish(artifacts, fitted, dataset=f"parquet:{parquet}",
                   digest=folder_sha256(Path(parquet)), events=rows,
                   items=len(model.item_ids_), protocol=proto, random_state=seed,
                   extra=extra)


def _spark_metrics(ds: Dataset, protocol: str, seed: int) -> dict[str, dict[str, float]]:
    """spark_als's metrics, under the name it is published as."""
    result = evaluate(ds, ["spark_als"], protocol=protocol, random_state=seed, progress=False)
    if "spark_als" not in result.metrics:
        raise click.ClickException(f"evaluating spark_als failed: {result.errors['spark_als']}")
    return {"als": result.metrics["spark_als"]}


@click.group("archive")
def archive_group() -> None:
    """The events archive the consumers write (STREAMREC_DATABASE_URL)."""


@archive_group.command("export")
@click.option("--parquet", "folder", type=click.Path(file_okay=False), required=True,
              help="A new (or empty) folder for part-NNNNN.parquet files.")
def archive_export_command(folder: str) -> None:
    """Export the archived interactions as Parquet (user_id, item_id, weight, ts).

    One row per event with its implicit weight, oldest first: what `streamrec train
    --engine spark --parquet FOLDER` reads.
    """
    if importlib.util.find_spec("pyarrow") is None:
        raise click.ClickException("Parquet export needs pyarrow: pip install 'streamrec[spark]'")
    from infra.bootstrap import archive_dataset
    from offline.parquet_log import write_parquet

    try:
        log = archive_dataset(Settings()).interactions
        paths = write_parquet(log, Path(folder))
    except StreamrecError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"exported {len(log)} events in {len(paths)} files -> {folder}")
