"""SASRec (Kang & McAuley 2018): the next item from a user's sequence, trained in PyTorch.

Self-attentive sequential recommendation: item embeddings plus learned
positions, causal self-attention blocks, and a full softmax over every item
(cross-entropy at every position of every sequence), with the output layer
sharing the input item embeddings. Training runs on a GPU when one is present,
else on all CPU cores given to the process.

Settings adapt to the log instead of being fitted to one data set:

* sequence length: the 95th percentile of the users' history lengths
  (``offline.sequences.auto_max_len``);
* epochs: early stopping on a validation slice carved from the training log
  only -- each user's last training item (by time; equal timestamps keep file
  order). A log without usable order (all timestamps equal) is said so in the
  log, and a random item per user (fixed seed) is held out instead. The epoch
  count kept is the fewest not measurably worse (one paired standard error)
  than the best (``fewest_epochs``);
* the training rows: each user's sequence in time order, alone or with a
  freshly shuffled copy of it at every epoch (``ORDERS``), whichever validates
  better -- on logs whose order carries little (reviews, baskets), the shuffled
  copies teach every co-occurring pair in both directions; on logs where the
  order is the signal, time order alone wins;
* an ensemble: the searched row sets' networks, their scores combined
  (:func:`combine_logits`), are validated too; where the combination beats the
  best single network, every row set is refitted and the refits are served
  together (a refit: the searched network trained on over the whole log for
  half its epochs, ``warm_epochs``);
* further seeds: networks of the best row set from other seeds, each served only
  where it makes the ensemble validate better, while the budget covers them;
* a wall-clock budget (``max_train_s``) that stops training at the best epoch
  so far on logs much larger than the shipped ones; where the budget left does
  not cover the best member's refit, the validated networks are served (as
  validation scored them), and a later member whose refit it does not cover is
  left out.

The trained network is exported as NumPy arrays + JSON (:meth:`SASRecScorer.export`)
and served by ``online_models.sequential.SequentialModel`` without PyTorch.

>>> from core.scoring import Interactions
>>> log = Interactions.from_records([(f"u{u}", f"i{(u + t) % 6}", 1, t)
...                                  for u in range(30) for t in range(5)])
>>> model = SASRecScorer(dim=8, max_epochs=2, batch_size=16)
>>> model.fit(log)
>>> model.score("u0", ["i5", "unknown"]).ids
['i5']
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ConfigurationError, NotFound
from core.scoring import Interactions
from core.types import Item
from offline.models.base import MatrixScorer
from offline.models.tuning import ValidationSlice, make_validation_slice
from offline.sequences import auto_max_len, has_order, training_windows, user_sequences
from online_models.sequential import SequentialConfig, SequentialModel

__all__ = ["ORDERS", "Dropout", "SASRecNet", "SASRecScorer", "combine_logits", "fewest_epochs",
           "length_batches", "seed_epochs", "shuffle_rows", "training_threads", "warm_epochs"]

log = logging.getLogger(__name__)

#: Training row sets, by name: ``time`` -- each user's items in time order;
#: ``time+reversed`` -- those plus each sequence reversed (every co-occurring pair
#: taught in both directions: on logs whose order says little, what came before
#: an item predicts it as well as what came after); ``time+shuffled`` -- plus a
#: fresh random order of every row at every epoch; ``time+shuffled+masked`` -- as
#: ``time+shuffled``, and at every epoch each input item of every row is hidden from
#: the network (replaced by padding) with probability ``MASK_RATE`` (CL4SRec-style
#: item masking: the targets stay).
ORDERS = ("time", "time+reversed", "time+shuffled", "time+shuffled+masked")

#: Share of input items hidden per epoch by ``time+shuffled+masked``.
MASK_RATE = 0.2

def combine_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The members' item scores (each (batch, items), over ALL items) as one.

    Each member's scores are standardised per user (mean 0, standard deviation 1
    over every item), the standardised scores averaged, and the average put back
    on the members' mean scale (their per-user means and standard deviations
    averaged): the ranking is that of the averaged standardised scores, the values
    stay on a logit scale, and one member's scores come back unchanged. Scores
    from separately trained networks differ in offset and spread, so a plain mean
    would let the widest network rank alone. ``online_models.sequential`` computes
    the same figure in NumPy.
    """
    if len(logits) == 1:
        return logits[0]
    stacked = torch.stack(list(logits))
    mean = stacked.mean(dim=-1, keepdim=True)
    std = stacked.std(dim=-1, unbiased=False, keepdim=True).clamp(min=1e-12)
    return ((stacked - mean) / std).mean(dim=0) * std.mean(dim=0) + mean.mean(dim=0)


def _epoch_s(history: list[dict[str, float]]) -> float:
    """Seconds per training epoch (validation left out) of a search's ``history``."""
    return history[-1].get("train_s", 0.0) / max(len(history), 1) if history else 0.0


def _validation_s(history: list[dict[str, float]]) -> float:
    """Seconds per validation of a search's ``history``."""
    if not history:
        return 0.0
    return (history[-1]["seconds"] - history[-1].get("train_s", 0.0)) / len(history)


def _targets(sequences: dict[str, list[str]]) -> int:
    """Next-item targets (transitions) of the sequences."""
    return sum(max(len(s) - 1, 0) for s in sequences.values())


def fewest_epochs(per_user: Sequence[npt.NDArray[np.float64]], best: int) -> int:
    """The fewest epochs whose validation is within one paired standard error of the best.

    ``per_user[e - 1]``: each validation user's NDCG@10 after epoch ``e``; ``best``:
    the epoch of the highest mean. Validation curves flatten long before early
    stopping ends, and the highest epoch of a flat, noisy curve is often far out;
    the one-standard-error rule (Breiman et al., 1984) takes the smallest model not
    measurably worse. The comparison is paired (the same users at both epochs), so
    the standard error is that of the per-user differences, much tighter than the
    spread of NDCG across users.
    """
    if best < 1 or len(per_user) < best or len(per_user[best - 1]) < 2:
        return best
    top = per_user[best - 1]
    for epoch in range(1, best):
        diff = top - per_user[epoch - 1]
        if diff.mean() <= diff.std(ddof=1) / math.sqrt(len(diff)):
            return epoch
    return best


def warm_epochs(epochs: int) -> int:
    """Epochs a warm refit trains the searched network on the whole log: half the
    epochs its search chose, rounded up.

    Measured on the validation slice (the whole search run on its fit part, both
    refits scored on the slice): continuing the searched network for half its
    epochs scored as a fresh network trained for all of them (0.0863 against
    0.0864 after 4 of 8 epochs; 0.0857 after 2, 0.0867 after 5).
    """
    return max(1, math.ceil(epochs / 2))


def seed_epochs(epochs: int, left_s: float, epoch_s: float) -> int:
    """Epochs a further seed trains: the row set's ``epochs``, or as many as the
    ``left_s`` seconds cover at ``epoch_s`` each (its validation network and its
    refit together); 0: none."""
    if epoch_s <= 0.0:
        return epochs if left_s > 0.0 else 0
    return max(0, min(epochs, int(left_s // epoch_s)))


def length_batches(lengths: npt.NDArray[np.int64], batch_size: int,
                   rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
    """Row indices of each training step: rows of about one length together.

    A batch is padded to its longest row, and the network's layers run over every
    padded position; random batches of a shop's log (most histories short, a few
    long) are mostly padding. Rows are sorted by length (ties in random order),
    cut into steps of about as many next-item targets as ``batch_size`` random
    rows hold on average -- the step count, and each target's share of a step's
    loss, stay those of random batches -- and the steps are taken in random order.
    """
    if len(lengths) == 0:  # no row holds a transition (every history one item long)
        return []
    targets = lengths - 1
    budget = batch_size * max(float(targets.mean()), 1.0)
    order = np.lexsort((rng.random(len(lengths)), lengths))
    step = np.floor((np.cumsum(targets[order]) - 1) / budget)
    batches = np.split(order, np.flatnonzero(np.diff(step)) + 1)
    return [batches[i] for i in rng.permutation(len(batches))]


def shuffle_rows(ids: npt.NDArray[np.int64], rng: np.random.Generator
                 ) -> npt.NDArray[np.int64]:
    """Each right-aligned row of ``ids`` with its items in a fresh random order
    (the padding, 0, stays on the left)."""
    keys = rng.random(ids.shape)
    keys[ids == 0] = -1.0
    return np.take_along_axis(ids, np.argsort(keys, axis=1), axis=1)


class Dropout(nn.Module):
    """Inverted dropout (as ``nn.Dropout``), its mask drawn with ``torch.rand``.

    On the CPU, ``nn.Dropout``'s Bernoulli sampler made up 8 % of a training epoch
    here; a uniform draw compared with ``p`` gives the same distribution of masks
    in under half the time (forward and backward).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * ((torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p)))


class _Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a position-wise ReLU FFN."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_dim: int) -> None:
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim) for _ in range(4))
        self.w1, self.w2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.ln1(x)
        q, k, v = (w(h).view(b, n, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for w in (self.wq, self.wk, self.wv))
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.wo(attended.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.w2(self.drop(F.relu(self.w1(self.ln2(x))))))


class SASRecNet(nn.Module):
    """The network; item 0 is padding, sequences are right-aligned (newest item last)."""

    def __init__(self, n_items: int, dim: int, n_blocks: int, n_heads: int, max_len: int,
                 dropout: float, ffn_dim: int | None = None) -> None:
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(_Block(dim, n_heads, dropout, ffn_dim or dim)
                                    for _ in range(n_blocks))
        self.final_ln = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)
        nn.init.xavier_normal_(self.items.weight)
        nn.init.xavier_normal_(self.positions.weight)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (batch, length, dim) of right-aligned sequences (batch, length)."""
        n = seq.shape[1]
        x = self.items(seq) * math.sqrt(self.dim) + self.positions.weight[self.max_len - n:]
        x = self.drop(x)
        # A position attends to itself and to the real items before it; padding is
        # never attended to, so a padded sequence gives what the unpadded one does.
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        mask = causal & (seq != 0)[:, None, :]
        mask |= torch.eye(n, dtype=torch.bool, device=seq.device)
        mask = mask[:, None]
        for block in self.blocks:
            x = block(x, mask)
        out: torch.Tensor = self.final_ln(x)
        return out

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item (shared embeddings): hidden @ E[1:]^T."""
        return hidden @ self.items.weight[1:].T


def training_threads() -> int:
    """CPU threads for PyTorch: the cores this process may use that others leave idle.

    OpenMP threads spin while they wait for each other, so on a shared machine
    more threads than idle cores is far slower than fewer: measured here, one
    training step took 0.4 s on 1 thread and 2.5 s on 2 threads at a load of 12
    on 2 cores.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    busy = int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


def _arrays(net: SASRecNet) -> dict[str, npt.NDArray[np.floating]]:
    """One network's weights under ``online_models.sequential``'s array names."""
    state = {k: v.detach().float().cpu().numpy() for k, v in net.state_dict().items()}
    arrays: dict[str, npt.NDArray[np.floating]] = {
        "item_embeddings": state["items.weight"][1:],
        "positions": state["positions.weight"],
        "final_ln.weight": state["final_ln.weight"], "final_ln.bias": state["final_ln.bias"],
    }
    linear = {"attn.wq": "wq", "attn.wk": "wk", "attn.wv": "wv", "attn.wo": "wo",
              "ffn.w1": "w1", "ffn.w2": "w2"}
    for b in range(len(net.blocks)):
        p = f"blocks.{b}."
        for name in ("ln1", "ln2"):
            arrays[f"block{b}.{name}.weight"] = state[f"{p}{name}.weight"]
            arrays[f"block{b}.{name}.bias"] = state[f"{p}{name}.bias"]
        for name, layer in linear.items():
            # nn.Linear computes x @ W.T + b; the NumPy model stores W.T.
            arrays[f"block{b}.{name}"] = state[f"{p}{layer}.weight"].T
            arrays[f"block{b}.{name[:-2]}b{name[-1]}"] = state[f"{p}{layer}.bias"]
    return arrays


class SASRecScorer(MatrixScorer):
    """A sequential batch scorer: a user's training sequence -> scores of every item.

    ``score`` and the printed form come from :class:`MatrixScorer` (its user-item
    matrix stays unused).

    Parameters
    ----------
    dim, n_blocks, n_heads, dropout
        The network's width, depth, attention heads and dropout rate.
    max_len
        Sequence length attended over; None: from the data (``auto_max_len``).
    lr, batch_size
        Adam learning rate and sequences per step.
    max_epochs, patience
        Early stopping: the epochs a refit trains are the fewest whose validation
        NDCG@10 is within one paired standard error of the best epoch's
        (:func:`fewest_epochs`); the search stops ``patience`` epochs after that
        count and keeps the best epoch's weights.
    max_train_s
        Wall-clock budget of the whole training (searches + refits): each search
        gets an equal share of what is left among the searches to come and the
        refits planned (one, or one per row set where an ensemble may be refitted:
        a quarter each for two row sets); once a search is cut by its share, no
        refit is planned and the searches left share the rest. The refits get what
        is left (the best epoch so far is kept when a share is spent).
    max_val_users
        Users sampled for the validation slice.
    refit
        After early stopping, train a fresh network on the whole training log for
        the best epoch count (when the budget left covers it).
    weight_decay, label_smoothing, ffn_mult
        AdamW decoupled weight decay, cross-entropy label smoothing, feed-forward
        width as a multiple of ``dim`` (kept at 0, 0, 1: none helped on validation).
    all_transitions
        Train on every transition of histories longer than the model
        (``offline.sequences.training_windows``), not only their latest window.
    orders, shuffles
        The training row sets searched (see :data:`ORDERS`); the one with the best
        validation NDCG@10 is refitted (a tie keeps the first listed).
        ``shuffles``: shuffled copies per row and epoch for ``time+shuffled``.
    ensemble
        None: the searched networks' scores combined (:func:`combine_logits`) are
        validated too, and where the combination beats the best single network
        every row set is refitted and served as one ensemble (a tie keeps the
        single network); True: always the ensemble; False: never.
    seeds
        Further networks of the best row set, each from another seed, tried after
        the row sets' refits where the budget left covers them; each is served only
        where adding it to the served networks beats their validation figure
        (``tuning_report()["seeds"]``). 0: none. Each costs its training twice
        (on the validation's fit part, then refitted) and a share of every request.
    warm_refit
        A refit continues its searched network on the whole log for half the
        epochs (:func:`warm_epochs`) instead of training a fresh network for all
        of them: as good on the validation slice at half the cost, which leaves
        the budget to further seeds. False: a fresh network per refit, trained
        for all the epochs chosen.
    keep_searched
        Where the best row set was refitted, serve its validated network too, beside
        the refits (a second run of the same settings, trained anyway). Off: the
        whole fit run on a validation part and scored on the validation slice
        showed the validated network far weaker than the refit (it never learnt
        each user's latest transition) and adding nothing to the ensemble.
    """

    name = "sasrec"

    def __init__(self, dim: int = 128, n_blocks: int = 2, n_heads: int = 1,
                 dropout: float = 0.5, max_len: int | None = None, lr: float = 2e-3,
                 batch_size: int = 128, max_epochs: int = 200, patience: int = 5,
                 max_train_s: float = 720.0, max_val_users: int = 10000, refit: bool = True,
                 weight_decay: float = 0.0, label_smoothing: float = 0.0, ffn_mult: int = 1,
                 all_transitions: bool = True,
                 orders: Sequence[str] = ("time", "time+shuffled"), shuffles: int = 1,
                 ensemble: bool | None = None, keep_searched: bool = False, seeds: int = 1,
                 warm_refit: bool = True, random_state: int = 0) -> None:
        super().__init__()
        self.dim, self.n_blocks, self.n_heads, self.dropout = dim, n_blocks, n_heads, dropout
        self.max_len, self.lr, self.batch_size = max_len, lr, batch_size
        self.max_epochs, self.patience, self.max_train_s = max_epochs, patience, max_train_s
        self.max_val_users, self.refit, self.random_state = max_val_users, refit, random_state
        self.weight_decay, self.label_smoothing = weight_decay, label_smoothing
        self.ffn_mult, self.all_transitions = ffn_mult, all_transitions
        unknown = set(orders) - set(ORDERS)
        if not orders or unknown:
            raise ConfigurationError(f"sasrec orders must be among {ORDERS}, not {list(orders)}")
        self.orders, self.shuffles, self.ensemble = tuple(orders), shuffles, ensemble
        self.keep_searched, self.seeds, self.warm_refit = keep_searched, seeds, warm_refit
        # Validation figures of the further seeds tried, by name ("<rows>#<k>").
        self.seeds_: dict[str, dict[str, float]] = {}
        self.order_ = self.orders[0]
        self.search_: dict[str, dict[str, float]] = {}
        # The validated networks of the search, by row set, and the ensemble's figure.
        self.searched_: dict[str, SASRecNet] = {}
        self.ensemble_val_: float | None = None
        self.members_: list[str] = []
        self.nets_: list[SASRecNet] = []
        self.served_: list[str] = []  # what each network of nets_ is: "<rows>:refit" ...
        # item_index_ maps an item to its 1-based embedding row (row 0 is padding).
        self.sequences_: dict[str, list[str]] = {}
        self.net_: SASRecNet | None = None
        self.history_: list[dict[str, float]] = []
        self.best_epoch_ = 0
        self.epochs_ = 0  # what a refit trains: fewest_epochs(...) of the search
        self.device_ = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # -- data ------------------------------------------------------------------------------
    def _ids(self, sequences: Sequence[list[str]], length: int) -> npt.NDArray[np.int64]:
        """Right-aligned id matrix (len(sequences), length) of each sequence's latest items
        (0: padding), in NumPy on the CPU."""
        out = np.zeros((len(sequences), length), dtype=np.int64)
        for r, seq in enumerate(sequences):
            ids = [self.item_index_[i] for i in seq[-length:] if i in self.item_index_]
            if ids:
                out[r, length - len(ids):] = ids
        return out

    def _ordered(self, train: Interactions) -> Interactions:
        if has_order(train):
            return train
        log.warning("sasrec: every timestamp of the log is equal, so it carries no order; "
                    "the validation item of each user is drawn at random (seed %d)",
                    self.random_state)
        perm = np.random.default_rng(self.random_state).permutation(len(train))
        return train.subset(perm)

    # -- training --------------------------------------------------------------------------
    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        torch.manual_seed(self.random_state)
        if self.device_.type == "cpu":
            torch.set_num_threads(training_threads())
        log.info("sasrec: training on %s (%d CPU threads)", self.device_,
                 torch.get_num_threads())
        train = self._ordered(train)
        self.item_ids_ = sorted(set(np.unique(train.items).tolist()))
        self.item_index_ = {item: r + 1 for r, item in enumerate(self.item_ids_)}
        self.sequences_ = user_sequences(train)
        val = make_validation_slice(train, "leave-one-out", self.max_val_users,
                                    self.random_state)
        fit_seqs = user_sequences(val.train) if val is not None else self.sequences_
        max_len = self.max_len or auto_max_len(self.sequences_)
        orders = self.orders if val is not None else self.orders[:1]
        # The searches share the budget with the refits planned: where every row set
        # may be refitted (an ensemble), one refit per row set (a refit costs about
        # its search's epochs up to the best one, so at most what the search cost).
        refits = 0 if not self.refit else (
            len(orders) if len(orders) > 1 and self.ensemble is not False else 1)
        t0 = time.perf_counter()
        self.search_, self.searched_, self.ensemble_val_ = {}, {}, None
        # Each row set's search history and the epochs a network of it is trained for.
        runs: dict[str, tuple[list[dict[str, float]], int]] = {}
        best_epochs: dict[str, int] = {}
        for i, order in enumerate(orders):
            # An equal share of what is left, among the searches still to run and the
            # refits planned. A search cut by its share says that refits will not fit
            # this log in this budget: the searches left then share all of it.
            left = max(self.max_train_s - (time.perf_counter() - t0), 0.0)
            share = left / (len(orders) - i + refits)
            net = self._net(max_len, self.random_state)
            self._train(net, order, self._rows(fit_seqs, max_len, order), val, fit_seqs,
                        share)
            if self.history_[-1]["seconds"] > share:
                refits = 0
            score = max((r.get("val_ndcg@10", -np.inf) for r in self.history_),
                        default=-np.inf)
            self.search_[order] = {"val_ndcg@10": float(score),
                                   "best_epoch": float(self.best_epoch_),
                                   "refit_epochs": float(self.epochs_),
                                   "epochs": float(len(self.history_)),
                                   "seconds": self.history_[-1]["seconds"]}
            self.searched_[order] = net
            runs[order] = (self.history_, self.epochs_)
            best_epochs[order] = self.best_epoch_
        # Best first; the sort is stable, so a tie keeps the earlier (simpler) row set.
        ranked = sorted(orders, key=lambda o: -self.search_[o]["val_ndcg@10"])
        self.members_ = ranked[:1]
        if len(orders) > 1 and self.ensemble is not False and val is not None:
            self.ensemble_val_ = self._validate([self.searched_[o] for o in ranked], val,
                                                fit_seqs)
            if self.ensemble or self.ensemble_val_ > self.search_[ranked[0]]["val_ndcg@10"]:
                self.members_ = ranked
        self.order_ = ranked[0]
        self.history_, self.epochs_ = runs[self.order_]
        self.best_epoch_ = best_epochs[self.order_]
        self.nets_ = [self.searched_[o] for o in self.members_]
        self.served_ = [f"{o}:validated" for o in self.members_]
        if len(orders) > 1:
            log.info("sasrec: training rows %s chosen on validation: %s, ensemble of all %s",
                     self.members_, self.search_, self.ensemble_val_)
        if self.refit and val is not None:
            # Best member first. Refits and validated networks are not mixed: a
            # validated network never learnt each user's latest transition and scored
            # far below the refits (the whole fit run on a validation part). So where
            # the best member was refitted, the refitted members are served; where it
            # was not, the validated networks, as validation scored them.
            refitted: list[SASRecNet | None] = []
            for order in self.members_:
                if refitted and refitted[0] is None:
                    break  # the validated networks are served: no use refitting the rest
                refitted.append(self._refit(max_len, time.perf_counter() - t0, order,
                                            *runs[order], start=self.searched_[order]))
            if refitted[0] is not None:
                self.served_ = [f"{o}:refit" for o, net in zip(self.members_, refitted,
                                                                 strict=True)
                                if net is not None]
                self.nets_ = [net for net in refitted if net is not None]
            if self.keep_searched and self.served_[0].endswith(":refit"):
                # The best row set's validated network is a second, independently
                # trained network of the same settings: averaging it with the refit
                # is an ensemble of two runs, trained anyway.
                self.nets_.insert(1, self.searched_[self.order_])
                self.served_.insert(1, f"{self.order_}:validated")
        self.seeds_ = {}
        if self.seeds and val is not None and self.ensemble is not False:
            self._add_seeds(max_len, t0, val, fit_seqs, runs)
        self.net_ = self.nets_[0]

    def tuning_report(self) -> dict[str, object]:
        """What the validation chose: the row set, the epoch count, each set's figures."""
        return {"order": self.order_, "best_epoch": self.best_epoch_,
                "refit_epochs": self.epochs_, "search": self.search_,
                "ensemble_val_ndcg@10": self.ensemble_val_, "members": self.members_,
                "served": self.served_, "seeds": self.seeds_,
                "max_len": self.net_.max_len if self.net_ is not None else None}

    def _rows(self, sequences: dict[str, list[str]], max_len: int, order: str
              ) -> npt.NDArray[np.int64]:
        """The training rows of each user's sequence for row set ``order``, encoded once:
        right-aligned item rows of ``max_len + 1`` columns (the inputs and one target
        more)."""
        seqs = list(sequences.values())
        if order == "time+reversed":
            seqs += [s[::-1] for s in seqs]
        rows = (training_windows(seqs, max_len) if self.all_transitions
                else [s for s in seqs if len(s) > 1])
        return self._ids(rows, max_len + 1)

    def _optimizer(self, net: SASRecNet) -> torch.optim.Optimizer:
        # fused: one kernel per step instead of a handful of calls per parameter.
        return torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay,
                                 fused=True)

    def _epoch(self, net: SASRecNet, opt: torch.optim.Optimizer, rows: npt.NDArray[np.int64],
               rng: np.random.Generator, order: str) -> float:
        """One pass over the encoded ``rows`` (next-item cross-entropy at every position)."""
        net.train()
        if order.startswith("time+shuffled"):  # a fresh order of every row, every epoch
            rows = np.concatenate([rows, *(shuffle_rows(rows, rng)
                                           for _ in range(self.shuffles))])
        lengths = (rows > 0).sum(axis=1)
        data = torch.from_numpy(rows).to(self.device_)
        total, steps = 0.0, 0
        for batch in length_batches(lengths, self.batch_size, rng):
            # Padded only to the batch's longest row: its rows are of about one length.
            length = int(lengths[batch].max())
            ids = data[torch.from_numpy(batch).to(self.device_), -length:]
            inputs, targets = ids[:, :-1], ids[:, 1:]
            if order.endswith("+masked"):
                hide = torch.rand(inputs.shape, device=inputs.device) < MASK_RATE
                inputs = inputs.masked_fill(hide, 0)
            real = targets > 0
            loss = F.cross_entropy(net.item_logits(net(inputs)[real]), targets[real] - 1,
                                   label_smoothing=self.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        return total / max(steps, 1)

    def _train(self, net: SASRecNet, order: str, rows: npt.NDArray[np.int64],
               val: ValidationSlice | None, fit_seqs: dict[str, list[str]],
               budget_s: float) -> None:
        """Early stopping on ``val`` within ``budget_s`` seconds; ends with the best
        epoch's weights in ``net``, and the epochs a refit trains in ``epochs_``."""
        opt = self._optimizer(net)
        rng = np.random.default_rng(self.random_state)
        best, best_state = -np.inf, copy.deepcopy(net.state_dict())
        t0 = time.perf_counter()
        self.history_ = []
        train_s = 0.0  # without the validations: what a refit epoch costs
        per_user: list[npt.NDArray[np.float64]] = []
        for epoch in range(1, self.max_epochs + 1):
            t_epoch = time.perf_counter()
            record = {"epoch": float(epoch),
                      "loss": self._epoch(net, opt, rows, rng, order)}
            train_s += time.perf_counter() - t_epoch
            record["train_s"] = train_s
            if val is not None:
                per_user.append(self._user_ndcg([net], val, fit_seqs))
                record["val_ndcg@10"] = float(per_user[-1].mean())
            record["seconds"] = time.perf_counter() - t0
            self.history_.append(record)
            log.info("sasrec epoch %d: %s", epoch, record)
            score = record.get("val_ndcg@10", -record["loss"])
            if score > best:
                best, best_state, self.best_epoch_ = score, copy.deepcopy(net.state_dict()), epoch
            # Patience runs from the epoch a refit would train to: once the curve is
            # flat, epochs that are not measurably better than it stop the search
            # (without validation: from the lowest loss).
            if epoch - fewest_epochs(per_user, self.best_epoch_) >= self.patience:
                break
            if record["seconds"] > budget_s:
                log.warning("sasrec: training budget of %.0f s spent after %d epochs",
                            budget_s, epoch)
                break
        net.load_state_dict(best_state)
        net.eval()
        self.epochs_ = fewest_epochs(per_user, self.best_epoch_)

    def _net(self, max_len: int, seed: int) -> SASRecNet:
        """A freshly initialised network (its initial weights drawn from ``seed``)."""
        torch.manual_seed(seed)
        return SASRecNet(len(self.item_ids_), self.dim, self.n_blocks, self.n_heads, max_len,
                         self.dropout, self.ffn_mult * self.dim).to(self.device_)

    def _fixed(self, max_len: int, order: str, rows: npt.NDArray[np.int64], epochs: int,
               seed: int, what: str, start: SASRecNet | None = None) -> SASRecNet:
        """A network trained on ``rows`` for ``epochs`` epochs (no validation): a fresh
        one, or a copy of ``start`` trained further."""
        net = self._net(max_len, seed) if start is None else copy.deepcopy(start)
        opt = self._optimizer(net)
        rng = np.random.default_rng(seed)
        for epoch in range(1, epochs + 1):
            log.info("sasrec %s epoch %d of %r: loss %.4f", what, epoch, order,
                     self._epoch(net, opt, rows, rng, order))
        net.eval()
        return net

    def _refit(self, max_len: int, spent_s: float, order: str,
               history: list[dict[str, float]], epochs: int, seed: int | None = None,
               start: SASRecNet | None = None) -> SASRecNet | None:
        """A network trained on the whole training log with row set ``order``.

        The validated network never learnt from each user's latest transition (the
        validation item); the refit does. With ``warm_refit`` (and a ``start``, the
        searched network), it is ``start`` trained on for :func:`warm_epochs` epochs,
        else a fresh network trained for the epochs its search chose
        (:func:`fewest_epochs`). Skipped (None) when the budget left would not
        cover it (the search's epochs, ``history``, tell its cost).
        """
        warm = self.warm_refit and start is not None
        if _epoch_s(history) * (warm_epochs(epochs) if warm else epochs) \
                > self.max_train_s - spent_s:
            log.warning("sasrec: no refit of %r on the whole log (budget)", order)
            return None
        return self._refit_net(max_len, order, epochs,
                               self.random_state if seed is None else seed, start)

    def _refit_net(self, max_len: int, order: str, epochs: int, seed: int,
                   start: SASRecNet | None) -> SASRecNet:
        """The refit of a network searched (or seeded) for ``epochs`` epochs: ``start``
        trained on over the whole log for :func:`warm_epochs` epochs (``warm_refit``),
        else a fresh network trained for all ``epochs``."""
        warm = self.warm_refit and start is not None
        return self._fixed(max_len, order, self._rows(self.sequences_, max_len, order),
                           warm_epochs(epochs) if warm else epochs, seed, "refit",
                           start if warm else None)

    def _add_seeds(self, max_len: int, t0: float, val: ValidationSlice,
                   fit_seqs: dict[str, list[str]],
                   runs: dict[str, tuple[list[dict[str, float]], int]]) -> None:
        """Further networks of the best row set, each from another seed, added to the
        served networks while the ensemble validates better and the budget covers them.

        Averaging independently trained networks is the surest gain measured; a seed
        costs a network trained on the validation's fit part for the epochs the best
        row set's search chose (no early stopping: that count was chosen already), scored
        with the served networks' validated counterparts, then -- where refits are
        served -- its refit on the whole log. Where the budget left does not cover
        those epochs twice, the seed trains as many as it covers (:func:`seed_epochs`;
        the row set's search tells the epoch cost): a partly trained network still
        differs from the others, and validation says whether it adds. It is kept
        only where the combined validation figure beats the ensemble's without it;
        the first seed that does not stops the search.
        """
        history, epochs = runs[self.order_]
        refit = self.served_[0].endswith(":refit")
        served = list(dict.fromkeys(s.rsplit(":", 1)[0] for s in self.served_))
        if served == [self.order_]:
            figure = self.search_[self.order_]["val_ndcg@10"]
        elif served == self.members_ and self.ensemble_val_ is not None:
            figure = self.ensemble_val_
        else:
            figure = self._validate([self.searched_[m] for m in served], val, fit_seqs)
        # A refit trains on every transition; the search's epochs on the fit part only.
        scale = _targets(self.sequences_) / max(_targets(fit_seqs), 1)
        # The refit's share of a seed's epochs (warm: about half as many, continued).
        refit_share = (0.5 if self.warm_refit else 1.0) * scale * refit
        for k in range(1, self.seeds + 1):
            left = self.max_train_s - (time.perf_counter() - t0) - _validation_s(history)
            n = seed_epochs(epochs, left, _epoch_s(history) * (1 + refit_share))
            if n < 1:
                log.info("sasrec: no further seed (budget: %.0f s left)", left)
                return
            name, seed = f"{self.order_}#{k}", self.random_state + k
            net = self._fixed(max_len, self.order_, self._rows(fit_seqs, max_len, self.order_),
                              n, seed, "seed")
            score = self._validate([*(self.searched_[m] for m in served), net], val, fit_seqs)
            self.seeds_[name] = {"ensemble_val_ndcg@10": score, "before": figure,
                                 "epochs": float(n)}
            log.info("sasrec: seed %s validated %.4f with the served networks (%.4f without)",
                     name, score, figure)
            if not score > figure:
                return
            self.searched_[name] = net
            self.members_.append(name)
            served.append(name)
            figure = score
            if refit:
                self.nets_.append(self._refit_net(max_len, self.order_, n, seed, net))
                self.served_.append(f"{name}:refit")
            else:
                self.nets_.append(net)
                self.served_.append(f"{name}:validated")

    def _validate(self, nets: Sequence[SASRecNet], val: ValidationSlice,
                  fit_seqs: dict[str, list[str]], k: int = 10, block: int = 1024) -> float:
        """Mean NDCG@k of ``val`` (``validation_ndcg``'s figure), ranked in PyTorch, of
        the networks' combined scores (:func:`combine_logits`; one network: its own).

        Full-ranking validation is a top-k over every item per user; done with
        ``torch.topk`` on float32 blocks it costs well under a second for all the
        users of a shop-sized log, so early stopping can watch many users (a
        less noisy signal) at every epoch.
        """
        return float(self._user_ndcg(nets, val, fit_seqs, k, block).mean())

    @torch.no_grad()
    def _user_ndcg(self, nets: Sequence[SASRecNet], val: ValidationSlice,
                   fit_seqs: dict[str, list[str]], k: int = 10, block: int = 1024
                   ) -> npt.NDArray[np.float64]:
        """Each validation user's NDCG@k (in ``val.users`` order); see :meth:`_validate`."""
        for net in nets:
            net.eval()
        cols = torch.as_tensor([self.item_index_[i] for i in val.item_ids], dtype=torch.long,
                               device=self.device_)
        discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
        ideal = torch.cat([torch.zeros(1, dtype=torch.float64), discount.cumsum(0)])
        out = np.zeros(len(val.users))
        sequences = [fit_seqs.get(u, []) for u in val.users]
        for users, ids in self._blocks(sequences, nets[0].max_len, block):
            # Column j of the slice is item val.item_ids[j]: row item_index_ of E.
            scores = self._logits(nets, ids)[:, cols - 1]
            seen = val.seen[users].tocoo()
            scores[torch.as_tensor(seen.row, device=self.device_),
                   torch.as_tensor(seen.col, device=self.device_)] = -torch.inf
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            relevant = val.relevant[users]
            dense = torch.as_tensor(relevant.toarray() > 0)
            hits = torch.gather(dense, 1, top.indices.cpu()) & torch.isfinite(top.values.cpu())
            dcg = (hits.double() * discount[:hits.shape[1]]).sum(1)
            n_rel = torch.as_tensor(np.asarray(relevant.sum(axis=1)).ravel()).clamp(max=k)
            best = ideal[n_rel.long()]
            out[users] = torch.where(best > 0, dcg / best.clamp(min=1e-12), 0.0).numpy()
        return out

    def _blocks(self, sequences: Sequence[list[str]], max_len: int, block: int
                ) -> Iterator[tuple[npt.NDArray[np.int64], torch.Tensor]]:
        """The sequences in blocks of at most ``block``, shortest first: each block's
        indices into ``sequences`` and its encoded ids, padded only to its longest.

        The network runs over every padded position and most histories are short,
        so blocks of about one length cost a fraction of blocks padded to
        ``max_len``; right-aligned, with padding never attended to, a sequence's
        scores do not depend on its block.
        """
        ids = self._ids(sequences, max_len)
        lengths = (ids > 0).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), block):
            rows = order[start:start + block]
            width = max(int(lengths[rows].max()), 1)
            yield rows, torch.from_numpy(ids[rows, max_len - width:]).to(self.device_)

    # -- scoring ---------------------------------------------------------------------------
    @staticmethod
    def _logits(nets: Sequence[SASRecNet], ids: torch.Tensor) -> torch.Tensor:
        """Combined scores (batch, items) of every real item after encoded sequences."""
        return combine_logits([net.item_logits(net(ids)[:, -1]) for net in nets])

    @torch.no_grad()
    def _score_sequences(self, nets: Sequence[SASRecNet], sequences: Sequence[list[str]],
                         block: int = 1024) -> npt.NDArray[np.float64]:
        for net in nets:
            net.eval()
        out = np.empty((len(sequences), len(self.item_ids_)))
        for rows, ids in self._blocks(sequences, nets[0].max_len, block):
            out[rows] = self._logits(nets, ids).double().cpu().numpy()
        return out

    def _networks(self) -> list[SASRecNet]:
        if not self.nets_:
            raise NotFound("sasrec is not fitted")
        return self.nets_

    def score_sequences(self, sequences: Sequence[list[str]]) -> npt.NDArray[np.float64]:
        """Scores (len(sequences), len(item_ids_)) of sequences given oldest first."""
        return self._score_sequences(self._networks(), sequences)

    def score_many(self, user_ids: Sequence[str], item_ids: Sequence[str]
                   ) -> npt.NDArray[np.float64]:
        nets = self._networks()
        out = np.full((len(user_ids), len(item_ids)), np.nan)
        rows = np.array([r for r, u in enumerate(user_ids) if self.sequences_.get(u)],
                        dtype=np.int64)
        cols = np.array([self.item_index_.get(i, 0) - 1 for i in item_ids], dtype=np.int64)
        known = cols >= 0
        if len(rows) and known.any():
            scores = self._score_sequences(nets, [self.sequences_[user_ids[r]] for r in rows])
            out[np.ix_(rows, np.flatnonzero(known))] = scores[:, cols[known]]
        return out

    # -- export ----------------------------------------------------------------------------
    def to_numpy(self) -> SequentialModel:
        """The trained network(s) as arrays for ``online_models.sequential`` (no PyTorch)."""
        nets = self._networks()
        config = SequentialConfig(dim=self.dim, n_blocks=self.n_blocks, n_heads=self.n_heads,
                                  max_len=nets[0].max_len, members=len(nets))
        return SequentialModel(config, self.item_ids_, [_arrays(net) for net in nets])

    def export(self, folder: Path) -> list[str]:
        """Write the network into an artifact folder (NumPy + JSON); the file names."""
        return self.to_numpy().save(folder, self.name)
