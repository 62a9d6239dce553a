"""SASRec ensembles: the member networks' scores combined as validated, served in NumPy
with PyTorch's scores, saved and reloaded as data, an old single-network format refused
cleanly, and the ensemble kept only where validation says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from core.errors import DataNotFound
from core.scoring import Interactions
from online_models.sequential import FORMAT, SequentialConfig, SequentialModel

if TYPE_CHECKING:
    from offline.models.sasrec import SASRecScorer

N_ITEMS = 12


def mixed_log(n_users: int = 90, seed: int = 0) -> Interactions:
    """Users walk a cycle of the items, with one in three steps a random item."""
    rng = np.random.default_rng(seed)
    records = []
    for u in range(n_users):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(4, 9))
        for t in range(length):
            item = (start + t) % N_ITEMS if rng.random() < 0.67 else int(rng.integers(N_ITEMS))
            records.append((f"u{u}", f"i{item}", 1.0, float(t)))
    return Interactions.from_records(records)


@pytest.fixture(scope="module")
def ensemble() -> SASRecScorer:
    pytest.importorskip("torch")
    from offline.models.sasrec import SASRecScorer

    model = SASRecScorer(dim=16, n_heads=2, dropout=0.1, lr=1e-2, batch_size=32,
                         max_epochs=4, patience=4, ensemble=True, seeds=0)
    model.fit(mixed_log())
    return model


def test_the_ensemble_holds_each_row_sets_refit(ensemble: SASRecScorer) -> None:
    assert ensemble.members_ == sorted(
        ensemble.orders, key=lambda o: -ensemble.search_[o]["val_ndcg@10"])
    assert ensemble.served_ == [f"{o}:refit" for o in ensemble.members_]
    assert len(ensemble.nets_) == 2 and ensemble.net_ is ensemble.nets_[0]
    # Refitted on the whole log: not the validated networks of the search.
    assert all(net is not ensemble.searched_[o]
               for net, o in zip(ensemble.nets_, ensemble.members_, strict=True))


def test_kept_searched_the_best_row_sets_validated_network_is_served_beside_its_refit(
) -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import SASRecScorer

    model = SASRecScorer(dim=8, max_epochs=2, ensemble=True, keep_searched=True, seeds=0)
    model.fit(mixed_log(40))
    best, other = model.members_
    assert model.served_ == [f"{best}:refit", f"{best}:validated", f"{other}:refit"]
    assert model.nets_[1] is model.searched_[best]
    assert model.to_numpy().config.members == 3


def test_numpy_serves_the_ensemble_with_the_pytorch_scores(ensemble: SASRecScorer) -> None:
    served = ensemble.to_numpy()
    assert served.config.members == 2
    rng = np.random.default_rng(1)
    for length in (1, 2, 5, served.config.max_len, N_ITEMS - 1):
        seq = [f"i{j}" for j in rng.permutation(N_ITEMS)[:length]]
        expected = ensemble.score_sequences([seq])[0]
        got = served.score(["new-item", *seq[::-1]], [*ensemble.item_ids_, "new-item"])
        assert got.ids == ensemble.item_ids_
        np.testing.assert_allclose(got.scores, expected, rtol=1e-4, atol=1e-4)
        # top ranks by the same combined scores, history left out.
        top = served.top(seq[::-1], 5, exclude=set(seq))
        masked = expected.copy()
        masked[[ensemble.item_ids_.index(i) for i in seq]] = -np.inf
        order = np.argsort(-masked, kind="stable")[:len(top)]
        np.testing.assert_allclose(top.scores, masked[order], rtol=1e-4, atol=1e-4)
        assert set(top.ids) <= {ensemble.item_ids_[r] for r in np.flatnonzero(
            masked >= masked[order[-1]] - 1e-4)}


def test_the_combined_scores_are_the_members_standardised_scores_averaged(
    ensemble: SASRecScorer,
) -> None:
    import torch

    from offline.models.sasrec import combine_logits

    rng = np.random.default_rng(2)
    one = torch.as_tensor(rng.normal(3.0, 2.0, (4, 50)))
    assert torch.equal(combine_logits([one]), one)  # one member: its own logits
    # A member shifted and stretched per user ranks as before in the combination.
    two = torch.as_tensor(rng.normal(0.0, 1.0, (4, 50)))
    stretched = two * torch.as_tensor([[5.0], [0.5], [2.0], [9.0]]) + 7.0
    z = [(x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True)
         for x in (one, two)]
    expected_rank = torch.argsort(z[0] + z[1], dim=1)
    assert torch.equal(torch.argsort(combine_logits([one, stretched]), dim=1), expected_rank)


def test_the_ensemble_export_round_trips_as_data(ensemble: SASRecScorer,
                                                 tmp_path: Path) -> None:
    exported = ensemble.to_numpy()
    assert exported.save(tmp_path, "sasrec") == ["sasrec.npz", "sasrec.json"]
    config = json.loads((tmp_path / "sasrec.json").read_text())
    assert config["format"] == FORMAT == "streamrec-sasrec-npz/2" and config["members"] == 2
    with np.load(tmp_path / "sasrec.npz", allow_pickle=False) as arrays:
        assert {f"member{m}.item_embeddings" for m in range(2)} <= set(arrays.files)
    reread = SequentialModel.load(tmp_path, "sasrec")
    recent = ["i3", "i2", "i1"]
    assert reread.top(recent, 5).ids == exported.top(recent, 5).ids
    assert reread.score(recent, ["i4", "i5"]).scores.tolist() == \
        exported.score(recent, ["i4", "i5"]).scores.tolist()


def test_a_single_network_export_of_format_1_is_refused_saying_retrain(
    tmp_path: Path,
) -> None:
    from offline.train import load_sequential

    SequentialModel.random(["a", "b", "c"], dim=4, n_blocks=1, max_len=5).save(
        tmp_path, "sasrec")
    config = json.loads((tmp_path / "sasrec.json").read_text())
    config["format"] = "streamrec-sasrec-npz/1"
    del config["members"]
    (tmp_path / "sasrec.json").write_text(json.dumps(config))
    with pytest.raises(DataNotFound, match="retrain"):
        SequentialModel.load(tmp_path, "sasrec")
    # DataNotFound is what the model provider reads as "no sequential model": source off.
    with pytest.raises(DataNotFound, match="format"):
        load_sequential(tmp_path.parent, tmp_path.name)


def test_random_ensembles_score_one_sequence_as_their_members_combined() -> None:
    # Without PyTorch: the NumPy combination equals standardising each member's
    # scores over all items, averaging, and rescaling by the members' mean scale.
    items = [f"i{n}" for n in range(40)]
    model = SequentialModel.random(items, dim=8, n_blocks=2, n_heads=2, max_len=6,
                                   members=3, rng=np.random.default_rng(5))
    recent = ["i7", "i3", "i30"]
    members = [SequentialModel(SequentialConfig(8, 2, 2, 6), items, [arrays])
               for arrays in model.members]
    logits = np.array([m.score(recent, items).scores for m in members])
    mean, std = logits.mean(axis=1, keepdims=True), logits.std(axis=1, keepdims=True)
    expected = ((logits - mean) / std).mean(axis=0) * std.mean() + mean.mean()
    np.testing.assert_allclose(model.score(recent, items).scores, expected, rtol=1e-4,
                               atol=1e-4)
    assert model.top(recent, 3, exclude={"i7"}).ids == [
        items[r] for r in np.argsort(-np.where(np.arange(40) == 7, -np.inf, expected))[:3]]


def test_where_the_budget_covers_no_refit_the_validated_ensemble_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import SASRecScorer

    model = SASRecScorer(dim=8, max_epochs=2, ensemble=True, max_train_s=0.0)
    with caplog.at_level(logging.WARNING, logger="offline.models.sasrec"):
        model.fit(mixed_log(40))
    # The networks validation scored together, not a mix of refits and validated ones.
    assert model.served_ == [f"{o}:validated" for o in model.members_]
    assert model.nets_ == [model.searched_[o] for o in model.members_]
    assert sum("no refit" in r.getMessage() for r in caplog.records) == 1


def test_a_later_member_whose_refit_the_budget_cannot_cover_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import SASRecScorer

    original = SASRecScorer._refit
    calls: list[str] = []

    def refit(self: SASRecScorer, max_len: int, spent_s: float, order: str,
              *args: object, **kwargs: object) -> object:
        calls.append(order)
        return (original(self, max_len, spent_s, order, *args, **kwargs)  # type: ignore[arg-type]
                if len(calls) == 1 else None)

    monkeypatch.setattr(SASRecScorer, "_refit", refit)
    model = SASRecScorer(dim=8, max_epochs=2, ensemble=True, seeds=0)
    model.fit(mixed_log(40))
    assert calls == model.members_ and len(calls) == 2
    assert model.served_ == [f"{model.order_}:refit"]
    assert model.nets_[0] is not model.searched_[model.order_]


@pytest.mark.parametrize(("ensemble", "refits"), [(None, 2), (True, 2), (False, 1)])
@pytest.mark.parametrize("cut", [False, True])
def test_each_search_gets_its_share_of_what_is_left_and_a_cut_search_leaves_no_room_to_refits(
    monkeypatch: pytest.MonkeyPatch, ensemble: bool | None, refits: int, cut: bool,
) -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import SASRecScorer

    budgets: list[float] = []
    original = SASRecScorer._train

    def train(self: SASRecScorer, net: object, order: str, rows: object, val: object,
              fit_seqs: object, budget_s: float) -> None:
        budgets.append(budget_s)
        original(self, net, order, rows, val, fit_seqs, budget_s)  # type: ignore[arg-type]
        if cut and len(budgets) == 1:  # as if the first search ran past its share
            self.history_[-1]["seconds"] = budget_s + 1.0

    monkeypatch.setattr(SASRecScorer, "_train", train)
    SASRecScorer(dim=8, max_epochs=1, ensemble=ensemble, max_train_s=100.0).fit(mixed_log(40))
    assert budgets[0] == pytest.approx(100.0 / (2 + refits), abs=0.5)
    # The second search: the rest, shared with the refits still planned (none after a cut).
    expected = (100.0 - 5.0) / (1 + (0 if cut else refits)), 100.0 / (1 + (0 if cut else refits))
    assert expected[0] <= budgets[1] <= expected[1]


def _figures_by_size(monkeypatch: pytest.MonkeyPatch, figures: dict[int, float]) -> None:
    """Make validation give ``figures[number of networks scored together]``."""
    from offline.models.sasrec import SASRecScorer

    def user_ndcg(self: SASRecScorer, nets: list[object], *_: object, **__: object
                  ) -> np.ndarray:
        return np.full(1, figures[len(nets)])

    monkeypatch.setattr(SASRecScorer, "_user_ndcg", user_ndcg)


@pytest.mark.parametrize(("figures", "kept"), [
    ({1: 0.5, 2: 0.6, 3: 0.7, 4: 0.65}, 1),  # the first seed gains, the second does not
    ({1: 0.5, 2: 0.6, 3: 0.6}, 0),  # a tie is no gain
    ({1: 0.5, 2: 0.6, 3: 0.7, 4: 0.8}, 2),
])
def test_a_seed_of_the_best_row_set_is_served_only_where_the_ensemble_validates_better(
    monkeypatch: pytest.MonkeyPatch, figures: dict[int, float], kept: int,
) -> None:
    pytest.importorskip("torch")
    import torch

    from offline.models.sasrec import SASRecScorer

    _figures_by_size(monkeypatch, figures)
    model = SASRecScorer(dim=8, max_epochs=2, seeds=2)
    model.fit(mixed_log(40))
    best = model.order_
    row_sets = [f"{o}:refit" for o in model.members_[:2]]
    seeds = [f"{best}#{k}" for k in range(1, kept + 1)]
    assert model.served_ == row_sets + [f"{s}:refit" for s in seeds]
    assert model.members_[2:] == seeds
    assert model.to_numpy().config.members == len(model.nets_) == 2 + kept
    # Tried until one did not gain (or the seeds ran out), each scored with those before.
    tried = min(kept + 1, 2)
    assert list(model.tuning_report()["seeds"]) == [f"{best}#{k}" for k in range(1, tried + 1)]
    assert [r["ensemble_val_ndcg@10"] for r in model.seeds_.values()] == [
        figures[3 + k] for k in range(tried)]
    # Another seed: another network than the row set's own refit.
    if kept:
        first = model.nets_[model.members_.index(best)].items.weight
        assert not torch.equal(model.nets_[2].items.weight, first)


def test_no_seed_is_tried_where_the_budget_left_cannot_cover_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("torch")
    from offline.models import sasrec

    _figures_by_size(monkeypatch, {1: 0.5, 2: 0.6, 3: 0.9})
    # As if one validation took longer than the whole budget: the refits still fit.
    monkeypatch.setattr(sasrec, "_validation_s", lambda history: 1e6)
    model = sasrec.SASRecScorer(dim=8, max_epochs=2)
    with caplog.at_level(logging.INFO, logger="offline.models.sasrec"):
        model.fit(mixed_log(40))
    assert model.served_ == [f"{o}:refit" for o in model.members_]
    assert len(model.nets_) == 2 and model.seeds_ == {}
    assert any("no further seed" in r.getMessage() for r in caplog.records)


def test_a_seed_trains_the_chosen_epochs_or_as_many_as_the_budget_left_covers() -> None:
    pytest.importorskip("torch")
    from offline.models.sasrec import seed_epochs

    assert seed_epochs(10, left_s=1000.0, epoch_s=20.0) == 10
    assert seed_epochs(10, left_s=130.0, epoch_s=20.0) == 6
    assert seed_epochs(10, left_s=19.0, epoch_s=20.0) == 0
    assert seed_epochs(10, left_s=-5.0, epoch_s=20.0) == 0
    assert seed_epochs(10, left_s=5.0, epoch_s=0.0) == 10  # a cost not measured
