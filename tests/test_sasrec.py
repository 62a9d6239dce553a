"""The sequential model: it learns an order, the NumPy forward matches PyTorch, artifacts
hold no pickle, early stopping stops, and without PyTorch the source is simply absent.

Tests that train need PyTorch (the ``neural`` extra); they are skipped, saying so, only
where it is not importable. CI installs the extra, so they run there.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from core.errors import ConfigurationError
from core.scoring import Interactions
from core.types import Item
from offline.datasets import Dataset
from offline.models import neural
from offline.models.registry import make_model
from tests.contracts.scorer import ScorerContract

if TYPE_CHECKING:
    from offline.models.sasrec import SASRecScorer

needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch (the neural extra) is not installed: pip install -e '.[neural]'")

N_ITEMS = 10


def cyclic_log(n_users: int = 120, seed: int = 0) -> Interactions:
    """Every user walks the same cycle i0 -> i1 -> ... -> i9 -> i0 from a random start."""
    rng = np.random.default_rng(seed)
    records = []
    for u in range(n_users):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(4, 8))
        records += [(f"u{u}", f"i{(start + t) % N_ITEMS}", 1.0, float(t)) for t in range(length)]
    return Interactions.from_records(records)


@pytest.fixture(scope="module")
def trained() -> SASRecScorer:
    from offline.models.sasrec import SASRecScorer

    model = SASRecScorer(dim=16, n_heads=2, dropout=0.1, lr=1e-2, batch_size=32,
                         max_epochs=12, patience=12, refit=False, orders=("time",))
    model.fit(cyclic_log())
    return model


@needs_torch
class TestSASRec(ScorerContract):
    """The shared Scorer contract (unknown users and items left out, deterministic fit...)."""

    def make_scorer(self) -> SASRecScorer:
        from offline.models.sasrec import SASRecScorer

        return SASRecScorer(dim=8, max_epochs=2, batch_size=16)


@needs_torch
def test_after_a_then_b_the_model_ranks_the_next_item_of_the_sequence_first(
    trained: SASRecScorer,
) -> None:
    # Both the training network and the NumPy network it exports follow the order.
    served = trained.to_numpy()
    for a in range(N_ITEMS):
        b, c = (a + 1) % N_ITEMS, (a + 2) % N_ITEMS
        scores = trained.score_sequences([[f"i{a}", f"i{b}"]])[0]
        scores[[a, b]] = -np.inf  # history masked, as at ranking
        assert trained.item_ids_[int(np.argmax(scores))] == f"i{c}"
        assert served.top([f"i{b}", f"i{a}"], 1, exclude={f"i{a}", f"i{b}"}).ids == [f"i{c}"]


@needs_torch
def test_the_numpy_forward_gives_the_pytorch_scores_on_random_sequences(
    trained: SASRecScorer,
) -> None:
    served = trained.to_numpy()
    rng = np.random.default_rng(1)
    max_len = served.config.max_len
    for length in (1, 2, 5, max_len, max_len + 7):
        # Random orders without repeats (as the state store keeps them) plus an unknown id.
        seq = [f"i{j}" for j in rng.permutation(N_ITEMS)][:length]
        seq = (seq * 3)[:length] if length > N_ITEMS else seq
        seq = list(dict.fromkeys(seq))
        expected = trained.score_sequences([seq])[0]
        got = served.score(["new-item", *seq[::-1]], [*trained.item_ids_, "new-item"])
        assert got.ids == trained.item_ids_  # the unknown candidate is left out, not 0
        np.testing.assert_allclose(got.scores, expected, atol=1e-4)


@needs_torch
def test_training_writes_a_data_only_artifact_the_provider_loads(
    tmp_path: Path, trained: SASRecScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.models import ModelProvider
    from offline.models.registry import MODELS
    from offline.models.sasrec import SASRecScorer
    from offline.train import load_sequential, read_manifest, train

    # A short training keeps the test fast; the artifact path is the same.
    monkeypatch.setitem(MODELS, "sasrec", lambda **_: SASRecScorer(dim=8, max_epochs=2))

    dataset = Dataset("cyclic", cyclic_log(40),
                      [Item(f"i{n}", f"item {n}") for n in range(N_ITEMS)])
    train(dataset, tmp_path, ["popularity"], version="v1")
    provider = ModelProvider(tmp_path, min_interval_s=0)
    assert provider.sequential() is None  # this version has no sequential model

    result = train(dataset, tmp_path, ["sasrec"], version="v2")
    files = sorted(p.name for p in result.path.iterdir())
    assert files == ["manifest.json", "sasrec.json", "sasrec.npz"]  # no pickle
    assert read_manifest(tmp_path, "v2")["models"]["sasrec"]["format"] == "arrays"
    with np.load(result.path / "sasrec.npz", allow_pickle=False) as arrays:
        assert "member0.item_embeddings" in arrays.files
    loaded = provider.sequential()
    assert loaded is not None and loaded.config.n_blocks == 2

    # The round trip keeps the network: saved and reloaded scores agree exactly.
    exported = trained.to_numpy()
    exported.save(tmp_path, "copy")
    again = load_sequential(tmp_path, "v2", "sasrec")
    assert again.item_ids == loaded.item_ids
    from online_models.sequential import SequentialModel

    reread = SequentialModel.load(tmp_path, "copy")
    recent = ["i3", "i2", "i1"]
    assert reread.score(recent, ["i4", "i5"]).scores.tolist() == \
        exported.score(recent, ["i4", "i5"]).scores.tolist()


@needs_torch
def test_early_stopping_stops_when_validation_stops_improving_then_refits_that_long(
    caplog: pytest.LogCaptureFixture
) -> None:
    from offline.models.sasrec import SASRecScorer, warm_epochs

    # A log without any order to learn: validation cannot keep improving.
    rng = np.random.default_rng(3)
    noise = Interactions.from_records(
        [(f"u{u}", f"i{rng.integers(40)}", 1.0, float(t)) for u in range(60) for t in range(5)])
    model = SASRecScorer(dim=8, batch_size=64, max_epochs=100, patience=2, seeds=0)
    with caplog.at_level(logging.INFO, logger="offline.models.sasrec"):
        model.fit(noise)
    epochs = len(model.history_)
    assert epochs < 100
    # Patience runs from the epochs chosen for the refit: the fewest not measurably
    # worse than the best; the searched network keeps the best epoch's weights.
    assert 1 <= model.epochs_ <= model.best_epoch_ < epochs == model.epochs_ + model.patience
    best = max(r["val_ndcg@10"] for r in model.history_)
    assert model.history_[model.best_epoch_ - 1]["val_ndcg@10"] == best
    assert model.tuning_report()["refit_epochs"] == model.epochs_
    refits = [r for r in caplog.records
              if "refit epoch" in r.getMessage() and f"of {model.order_!r}" in r.getMessage()]
    assert len(refits) == warm_epochs(model.epochs_)


@needs_torch
def test_a_log_without_order_is_said_so_and_still_trains(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    from offline.models.sasrec import SASRecScorer

    log = cyclic_log(30)
    flat = Interactions(log.users, log.items, log.values, np.zeros(len(log)))
    model = SASRecScorer(dim=8, max_epochs=1)
    with caplog.at_level(logging.WARNING, logger="offline.models.sasrec"):
        model.fit(flat)
    assert any("no order" in r.getMessage() for r in caplog.records)
    assert model.score("u0").ids


def test_without_pytorch_the_sequential_source_is_absent_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cli.offline_commands import TRAIN_MODELS, _train_models

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    neural.torch_missing.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="offline.models.neural"):
            assert _train_models() == list(TRAIN_MODELS)
            with pytest.raises(ConfigurationError, match="neural"):
                make_model("sasrec")
            assert neural.torch_missing() is not None
        said = [r for r in caplog.records if "PyTorch is not installed" in r.getMessage()]
        assert len(said) == 1
    finally:
        neural.torch_missing.cache_clear()


@needs_torch
def test_three_clicks_along_a_sequence_lead_the_next_list_with_the_sources_reason(
    trained: SASRecScorer,
) -> None:
    """The live pipeline with the sequential source: the shopper's three latest clicks
    (i2, i3, i4) are read with the request and the next list opens with i5, explained."""
    import time

    from core.events import ItemClicked
    from index.faiss_index import ExactIndex
    from infra.memory_store import InMemoryStateStore
    from online_models.processor import StreamProcessor
    from online_models.profile import ContentProfile
    from online_models.serving.pipeline import Recommender
    from online_models.serving.popularity import PopularitySnapshot
    from online_models.serving.registry import SOURCES, SourceDeps, build_sources

    served = trained.to_numpy()
    catalog = {f"i{n}": Item(f"i{n}", f"item {n}", f"c{n % 2}", 1.0) for n in range(N_ITEMS)}
    index = ExactIndex(4)
    index.upsert(list(catalog), np.eye(N_ITEMS, 4, dtype=np.float32) + 0.1)
    state = InMemoryStateStore(recent_max=50, half_life_s=3600.0)
    deps = SourceDeps(state, index, catalog, PopularitySnapshot(state, catalog, refresh_s=0),
                      sequential=lambda: served)
    recommender = Recommender(state, index, catalog,
                              build_sources(["sequential", "popularity"], deps),
                              {"sequential": 1.0, "popularity": 0.05}, known_sources=SOURCES)
    processor = StreamProcessor(state, index, {i: it.category for i, it in catalog.items()},
                                half_life_s=3600.0, profile=ContentProfile(0.3))
    before = [r.item.item_id for r in recommender.recommend("shopper", 3).items]
    t0 = time.perf_counter()
    processor.apply([ItemClicked(user_id="shopper", item_id=f"i{n}", timestamp=1_000.0 + n)
                     for n in (2, 3, 4)])
    after = recommender.recommend("shopper", 3).items
    assert time.perf_counter() - t0 < 1.0
    assert after[0].item.item_id == "i5" and [r.item.item_id for r in after] != before
    assert after[0].reason == "Often next after what you just viewed"
    assert "sequential" in after[0].sources


@needs_torch
def test_the_validation_ranked_in_pytorch_gives_the_harness_ndcg() -> None:
    # Early stopping ranks every item with torch.topk; the figure must be the one the
    # shared NumPy ranking (history masked, NDCG@10) gives for the same scores.
    from offline.evaluation.ranking import validation_ndcg
    from offline.models.sasrec import SASRecScorer
    from offline.models.tuning import make_validation_slice
    from offline.sequences import user_sequences

    rng = np.random.default_rng(4)
    log = Interactions.from_records(  # half order, half noise: neither 0 nor 1
        [(f"u{u}", f"i{(u + t) % 30 if rng.random() < 0.5 else rng.integers(30)}", 1.0,
          float(t)) for u in range(80) for t in range(6)])
    # An ensemble of both row sets: its combined scores are what is validated.
    model = SASRecScorer(dim=8, max_epochs=2, refit=False, ensemble=True, seeds=0)
    model.fit(log)
    val = make_validation_slice(log, "leave-one-out", 1000, 0)
    assert val is not None and len(model.nets_) == 2
    fit_seqs = user_sequences(val.train)
    scores = model.score_sequences([fit_seqs.get(u, []) for u in val.users])
    cols = [model.item_ids_.index(i) for i in val.item_ids]
    expected = validation_ndcg(scores[:, cols], val.seen, val.relevant)
    assert 0.0 < expected < 1.0
    assert model._validate(model.nets_, val, fit_seqs, block=7) == pytest.approx(expected,
                                                                                 abs=1e-9)
    assert model.ensemble_val_ == pytest.approx(expected, abs=1e-9)


def test_training_windows_make_every_transition_a_target_exactly_once() -> None:
    from offline.sequences import training_windows

    rng = np.random.default_rng(2)
    sequences = [[f"{s}-{t}" for t in range(int(rng.integers(0, 30)))] for s in range(50)]
    rows = training_windows(sequences, max_len=4)
    pairs = sorted((a, b) for row in rows for a, b in itertools.pairwise(row))
    expected = sorted((a, b) for seq in sequences for a, b in itertools.pairwise(seq))
    assert pairs == expected
    assert all(2 <= len(row) <= 5 for row in rows)  # max_len inputs + 1 target at most


@needs_torch
@pytest.mark.parametrize(("figures", "chosen", "members"), [
    ({"time": 0.5, "time+shuffled": 0.4, "ensemble": 0.45}, "time", ["time"]),
    ({"time": 0.4, "time+shuffled": 0.5, "ensemble": 0.3}, "time+shuffled", ["time+shuffled"]),
    # a tie keeps the first listed, and the ensemble must beat it, not tie
    ({"time": 0.5, "time+shuffled": 0.5, "ensemble": 0.5}, "time+shuffled", ["time+shuffled"]),
    ({"time": 0.4, "time+shuffled": 0.5, "ensemble": 0.6}, "time+shuffled",
     ["time+shuffled", "time"]),
])
def test_the_row_set_with_the_better_validation_is_kept_and_refitted(
    monkeypatch: pytest.MonkeyPatch, figures: dict[str, float], chosen: str,
    members: list[str]
) -> None:
    """Each row set is searched; the best is refitted alone, or all of them (best first)
    where their combined scores validate better than the best alone."""
    from offline.models.sasrec import SASRecScorer

    rows_of: list[str] = []
    original_rows = SASRecScorer._rows

    def rows(self: SASRecScorer, sequences: dict[str, list[str]], max_len: int, order: str
             ) -> object:
        rows_of.append(order)
        return original_rows(self, sequences, max_len, order)

    def user_ndcg(self: SASRecScorer, nets: list[object], *_: object, **__: object
                  ) -> np.ndarray:
        return np.full(1, figures["ensemble" if len(nets) > 1 else rows_of[-1]])

    monkeypatch.setattr(SASRecScorer, "_user_ndcg", user_ndcg)
    monkeypatch.setattr(SASRecScorer, "_rows", rows)
    model = SASRecScorer(dim=8, max_epochs=3, patience=1, orders=("time+shuffled", "time"),
                         seeds=0)
    model.fit(cyclic_log(40))
    report = model.tuning_report()
    assert model.order_ == chosen == report["order"]
    assert report["members"] == model.members_ == members
    assert {o: r["val_ndcg@10"] for o, r in model.search_.items()} == {
        o: f for o, f in figures.items() if o != "ensemble"}
    assert report["ensemble_val_ndcg@10"] == figures["ensemble"]
    assert rows_of == ["time+shuffled", "time", *members]  # both searched, then the refits
    # Served: the refits, not the validated networks of the search.
    assert report["served"] == [f"{o}:refit" for o in members]
    assert len(model.nets_) == len(members) == model.to_numpy().config.members
    assert all(net is not model.searched_[o] for net, o in zip(model.nets_, members,
                                                                strict=True))

def test_each_step_takes_rows_of_about_one_length_and_every_row_once_per_epoch() -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import length_batches

    rng = np.random.default_rng(8)
    lengths = rng.choice([2, 2, 2, 3, 4, 7, 13], size=1000)
    batches = length_batches(lengths, 32, rng)
    taken = np.concatenate(batches)
    assert sorted(taken.tolist()) == list(range(1000))
    # As many steps as batches of 32 random rows, each about as many targets.
    assert abs(len(batches) - 1000 / 32) <= 1
    budget = 32 * (lengths - 1).mean()
    assert all((lengths[b] - 1).sum() < budget + 12 for b in batches)
    # Padded to its longest row, a step is nearly all items, not padding.
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded < 1.05 * lengths.sum()  # random batches of these rows: 2.8x
    # The steps come in a fresh random order, not shortest first.
    firsts = [int(lengths[b].max()) for b in batches]
    assert firsts != sorted(firsts)
    assert [b.tolist() for b in length_batches(lengths, 32, rng)] != [b.tolist()
                                                                       for b in batches]


def test_a_shuffled_row_holds_its_items_in_a_new_order_after_its_padding() -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import shuffle_rows

    rng = np.random.default_rng(9)
    ids = np.zeros((200, 8), dtype=np.int64)
    for r in range(200):
        n = int(rng.integers(2, 9))
        ids[r, 8 - n:] = rng.choice(np.arange(1, 50), size=n, replace=False)
    shuffled = shuffle_rows(ids, rng)
    assert ((shuffled > 0).sum(axis=1) == (ids > 0).sum(axis=1)).all()
    assert (np.diff(shuffled > 0, axis=1) >= 0).all()  # padding stays on the left
    assert all(sorted(a) == sorted(b) for a, b in zip(shuffled.tolist(), ids.tolist(),
                                                       strict=True))
    assert (shuffled != ids).any(axis=1).mean() > 0.5


@needs_torch
def test_a_sequence_scores_the_same_alone_or_in_a_block_of_other_lengths(
    trained: SASRecScorer,
) -> None:
    # Blocks are padded only to their longest sequence: the scores must not depend on it.
    rng = np.random.default_rng(10)
    sequences = [[f"i{j}" for j in rng.permutation(N_ITEMS)[:n]] for n in (1, 9, 3, 1, 6, 2)]
    together = trained.score_sequences(sequences)
    for seq, scores in zip(sequences, together, strict=True):
        np.testing.assert_allclose(trained.score_sequences([seq])[0], scores, rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_allclose(trained._score_sequences(trained.nets_, sequences, block=2),
                               together, rtol=1e-5, atol=1e-5)


def test_the_refit_trains_the_fewest_epochs_within_one_paired_standard_error_of_the_best(
) -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import fewest_epochs

    rng = np.random.default_rng(11)
    users = 5000
    base = rng.random(users)
    # Epoch 1 clearly worse; epochs 2 and 3 differ from the best (4) by noise of mean 0.
    curve = [base - 0.05, base + rng.normal(0, 0.05, users) - 0.0005,
             base + rng.normal(0, 0.05, users), base]
    assert fewest_epochs(curve, best=4) == 2
    # A steady gain, small beside the spread across users but not beside the paired
    # differences: every epoch before the best is measurably worse.
    steady = [base + 0.002 * e for e in range(4)]
    assert fewest_epochs(steady, best=4) == 4
    assert fewest_epochs([], best=3) == 3  # no validation (the loss was watched)


def test_dropout_keeps_each_value_with_probability_1_minus_p_scaled_up_and_only_in_training(
) -> None:
    pytest.importorskip("torch")
    import torch

    from offline.models.sasrec import Dropout

    torch.manual_seed(0)
    drop, x = Dropout(0.3), torch.ones(200_000)
    out = drop(x)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))
    drop.eval()
    assert drop(x) is x


@needs_torch
@pytest.mark.parametrize("warm", [True, False])
def test_a_warm_refit_continues_the_searched_network_for_half_its_epochs(
    monkeypatch: pytest.MonkeyPatch, warm: bool,
) -> None:
    from offline.models.sasrec import SASRecScorer, warm_epochs

    calls: list[tuple[str, int, object]] = []
    original = SASRecScorer._fixed

    def fixed(self: SASRecScorer, max_len: int, order: str, rows: object, epochs: int,
              seed: int, what: str, start: object = None) -> object:
        calls.append((order, epochs, start))
        return original(self, max_len, order, rows, epochs, seed, what,  # type: ignore[arg-type]
                        start)  # type: ignore[arg-type]

    monkeypatch.setattr(SASRecScorer, "_fixed", fixed)
    model = SASRecScorer(dim=8, max_epochs=6, patience=2, seeds=0, warm_refit=warm)
    model.fit(cyclic_log(40))
    expected = [(o, warm_epochs(int(model.search_[o]["refit_epochs"])) if warm
                 else int(model.search_[o]["refit_epochs"]),
                 model.searched_[o] if warm else None) for o in model.members_]
    assert calls == expected
    assert all(net is not model.searched_[o] for net, o in zip(model.nets_, model.members_,
                                                                strict=True))
    assert [warm_epochs(n) for n in (1, 2, 7, 13)] == [1, 1, 4, 7]


def test_an_unknown_row_set_is_refused() -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import SASRecScorer

    with pytest.raises(ConfigurationError, match="orders"):
        SASRecScorer(orders=("time", "backwards"))


def test_the_blocked_item_scores_equal_one_matrix_product() -> None:
    from online_models.sequential import MATVEC_BLOCK, _matvec

    rng = np.random.default_rng(6)
    vector = rng.normal(size=128).astype(np.float32)
    for rows in (3, MATVEC_BLOCK // 128, MATVEC_BLOCK // 128 * 4 + 17):  # one block, many
        matrix = rng.normal(size=(rows, 128)).astype(np.float32)
        np.testing.assert_allclose(_matvec(matrix, vector), matrix @ vector, rtol=1e-5,
                                   atol=1e-5)


@needs_torch
def test_a_log_of_one_item_histories_trains_without_a_step_and_still_scores() -> None:
    """No history holds a transition: training takes no step (it used to crash on the
    empty batch list) and the network still scores the items it knows."""
    from offline.models.sasrec import SASRecScorer, length_batches

    assert length_batches(np.array([], dtype=np.int64), 16, np.random.default_rng(0)) == []
    log = Interactions.from_records([(f"u{u}", f"i{u % 5}", 1, u) for u in range(30)])
    model = SASRecScorer(dim=8, max_epochs=2, batch_size=16)
    model.fit(log)
    assert sorted(model.score("u0", ["i1", "i2", "unknown"]).ids) == ["i1", "i2"]
