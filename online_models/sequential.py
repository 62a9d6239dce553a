"""The sequential model's forward pass in NumPy: the next item from a shopper's latest clicks.

A SASRec network (Kang & McAuley 2018) trained offline (``offline.models.sasrec``,
PyTorch) is exported as plain arrays: ``<stem>.npz`` (read with
``allow_pickle=False``) plus ``<stem>.json`` (the shape of the network). This module
runs the network for ONE sequence per request, so serving needs neither PyTorch nor a
pickle: a 50-item sequence through two 64-dim blocks costs a fraction of a
millisecond, and a new click changes the next list at once, without retraining.

The export may hold an ensemble: several member networks of the same shape over the
same items (``member{m}.`` array prefixes), run together as one batched forward pass;
their scores are combined as training validated them (see :meth:`SequentialModel.top`).

The network (pre-norm transformer blocks, causal self-attention):

    x_t = E[item_t] * sqrt(d) + P[position_t]
    x  <- x + Attention(LN1(x))          (causal: a position sees itself and the past)
    x  <- x + W2 relu(W1 LN2(x))
    h   = LN_final(x_last);   score(item) = h . E[item]   (input and output embeddings shared)

Examples
--------
>>> rng = np.random.default_rng(0)
>>> model = SequentialModel.random(["a", "b", "c", "d"], dim=8, n_blocks=1, max_len=5, rng=rng)
>>> model.user_vector(["zzz"]) is None        # no known item: nothing to say
True
>>> sorted(model.score(["b", "a"], ["a", "c", "zzz"]).ids)   # unknown items left out
['a', 'c']
>>> sorted(model.top(["b", "a"], 5, exclude={"a", "b"}).ids)    # best first; history left out
['c', 'd']
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound
from core.types import ScoredItems

__all__ = ["FORMAT", "SequentialConfig", "SequentialModel"]

#: Written into the JSON config; bumped when the array layout changes (2: member
#: networks, arrays prefixed ``member{m}.``; format 1 is refused: retrain).
FORMAT = "streamrec-sasrec-npz/2"

Array = npt.NDArray[np.float32]

#: Per-block array names (prefixed ``block{i}.``), shared with the PyTorch exporter.
BLOCK_ARRAYS = ("ln1.weight", "ln1.bias", "attn.wq", "attn.bq", "attn.wk", "attn.bk",
                "attn.wv", "attn.bv", "attn.wo", "attn.bo", "ln2.weight", "ln2.bias",
                "ffn.w1", "ffn.b1", "ffn.w2", "ffn.b2")
MATRICES = {"wq", "wk", "wv", "wo", "w1", "w2"}


@dataclass(frozen=True)
class SequentialConfig:
    """The shape of the network (the JSON next to the arrays)."""

    dim: int
    n_blocks: int
    n_heads: int
    max_len: int
    layer_norm_eps: float = 1e-5
    members: int = 1
    format: str = FORMAT


#: Most matrix elements one BLAS call gets per request (see :func:`_matvec`).
MATVEC_BLOCK = 1 << 17


def _matvec(matrix: Array, vector: Array) -> Array:
    """``matrix @ vector`` in row blocks of at most ``MATVEC_BLOCK`` elements.

    OpenBLAS hands a large enough matrix-vector product to its thread pool; for a
    single request on a busy server waking those threads costs far more than the
    product: measured on the 2-core machine (load 3), all 4,385 x 128 item
    embeddings at once took 12 ms per ``top`` (p50), the same product in blocks of
    1,024 rows 0.37 ms (a 4,385 x 64 matrix stayed under the switch).
    """
    rows = max(1, MATVEC_BLOCK // max(matrix.shape[1], 1))
    if matrix.shape[0] <= rows:
        return matrix @ vector
    return np.concatenate([matrix[r:r + rows] @ vector for r in range(0, matrix.shape[0], rows)])


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class SequentialModel:
    """A trained sequential network (or an ensemble of them), run in NumPy one sequence
    at a time.

    ``members`` holds each member network's arrays: ``item_embeddings`` with one row
    per entry of ``item_ids`` (the padding row of training is not kept); weight
    matrices stored as ``y = x @ W + b``. With several members, an item's score is
    ``offline.models.sasrec.combine_logits`` of the members' logits: each member's
    logits standardised per sequence over all items, averaged, and put back on the
    members' mean scale -- computed without scoring every item, from each member's
    item-embedding mean and covariance (precomputed here). One member's scores are
    its logits. Scoring only reads: the model never learns online (a new version
    comes from ``streamrec train``).
    """

    def __init__(self, config: SequentialConfig, item_ids: Sequence[str],
                 members: Sequence[Mapping[str, npt.NDArray[np.floating]]]) -> None:
        if len(members) != config.members or not members:
            raise ValueError(f"{len(members)} member networks, the config says "
                             f"{config.members}")
        self.config = config
        self.item_ids = list(item_ids)
        self.item_index = {item: row for row, item in enumerate(self.item_ids)}
        self.members = [{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in m.items()}
                        for m in members]
        #: The first member's arrays (the single network of a one-member export).
        self.arrays = self.members[0]
        for m in self.members:
            if m["item_embeddings"].shape != (len(self.item_ids), config.dim):
                raise ValueError(f"item_embeddings {m['item_embeddings'].shape} do not "
                                 f"match {len(self.item_ids)} items x dim {config.dim}")
        self._scale = np.float32(np.sqrt(config.dim))
        # Every array stacked over the members (leading axis): the members run as one
        # batched forward pass, which costs about what one member does (per request the
        # cost is NumPy's per-call overhead, not the arithmetic).
        stacked = {k: np.stack([m[k] for m in self.members]) for k in self.arrays}
        self._embeddings = stacked["item_embeddings"]
        self._positions = stacked["positions"]
        self._final_ln = stacked["final_ln.weight"][:, None], stacked["final_ln.bias"][:, None]
        self._blocks = [[stacked[f"block{b}.{name}"] for name in BLOCK_ARRAYS]
                        for b in range(config.n_blocks)]
        # Biases and layer-norm weights broadcast over the positions of a sequence.
        self._blocks = [[a if a.ndim == 3 else a[:, None] for a in block]
                        for block in self._blocks]
        # Item scores of all members at once: [E_1 | E_2 | ...] @ [w_1 h_1; w_2 h_2; ...].
        self._items = np.ascontiguousarray(np.concatenate(list(self._embeddings), axis=1))
        # Per member: the item embeddings' mean and covariance over all items (float64),
        # so that a sequence's logit mean is mean . h and its variance h' C h.
        self._means = np.stack([e.astype(np.float64).mean(axis=0) for e in self._embeddings])
        self._covs = np.stack([np.cov(e.astype(np.float64), rowvar=False, bias=True)
                               for e in self._embeddings])

    # -- storage (data only: NumPy arrays + JSON, never a pickle) ------------------------
    def save(self, folder: Path, stem: str) -> list[str]:
        """Write ``<stem>.npz`` and ``<stem>.json`` into ``folder``; the file names written."""
        payload: dict[str, Any] = {"item_ids": np.array(self.item_ids, dtype=np.str_)}
        for m, arrays in enumerate(self.members):
            payload.update({f"member{m}.{k}": v for k, v in arrays.items()})
        np.savez(folder / f"{stem}.npz", **payload)
        (folder / f"{stem}.json").write_text(json.dumps(asdict(self.config), indent=2))
        return [f"{stem}.npz", f"{stem}.json"]

    @classmethod
    def load(cls, folder: Path, stem: str) -> SequentialModel:
        """The model saved by :meth:`save` (raises DataNotFound when it is not there or
        is in another format, such as format 1 of single networks: retrain to serve it)."""
        config_path, arrays_path = folder / f"{stem}.json", folder / f"{stem}.npz"
        if not (config_path.exists() and arrays_path.exists()):
            raise DataNotFound(f"no sequential model {stem!r} in {folder}",
                               details={"path": str(folder)})
        raw = json.loads(config_path.read_text())
        if raw.get("format") != FORMAT:
            raise DataNotFound(f"{config_path} is format {raw.get('format')!r}, not {FORMAT!r}"
                               "; retrain (streamrec train) to serve the sequential model",
                               details={"path": str(folder)})
        config = SequentialConfig(**raw)
        members: list[dict[str, npt.NDArray[np.floating]]] = [{} for _ in range(config.members)]
        with np.load(arrays_path, allow_pickle=False) as data:
            for key in data.files:
                if key != "item_ids":
                    prefix, name = key.split(".", 1)
                    members[int(prefix.removeprefix("member"))][name] = data[key]
            item_ids = data["item_ids"].tolist()
        return cls(config, item_ids, members)

    @classmethod
    def random(cls, item_ids: Sequence[str], *, dim: int = 16, n_blocks: int = 2,
               n_heads: int = 1, max_len: int = 20, members: int = 1,
               rng: np.random.Generator | None = None) -> SequentialModel:
        """An untrained network (or ``members`` of them) of the given shape (tests and
        examples)."""
        rng = rng or np.random.default_rng(0)
        nets: list[dict[str, npt.NDArray[np.floating]]] = []
        for _ in range(members):
            arrays: dict[str, npt.NDArray[np.floating]] = {
                "item_embeddings": rng.normal(0, 0.1, (len(item_ids), dim)),
                "positions": rng.normal(0, 0.1, (max_len, dim)),
                "final_ln.weight": np.ones(dim), "final_ln.bias": np.zeros(dim),
            }
            for b in range(n_blocks):
                for name in BLOCK_ARRAYS:
                    shape = (dim, dim) if name.split(".")[1] in MATRICES else (dim,)
                    base = 1.0 if name.endswith("weight") else 0.0
                    arrays[f"block{b}.{name}"] = base + rng.normal(0, 0.1, shape)
            nets.append(arrays)
        return cls(SequentialConfig(dim, n_blocks, n_heads, max_len, members=members),
                   item_ids, nets)

    # -- forward ---------------------------------------------------------------------------
    def _rows(self, recent: Sequence[str]) -> list[int]:
        """Known items of ``recent`` (newest first) as rows, oldest first, at most max_len."""
        rows = [self.item_index[i] for i in recent if i in self.item_index]
        return rows[: self.config.max_len][::-1]

    def _hidden(self, rows: list[int]) -> Array:
        """Each member's last hidden state (members, dim) after the item rows."""
        cfg = self.config
        n, m = len(rows), len(self.members)
        # Sequences are right-aligned in training (left padding): the newest item
        # always sits at the last position.
        x = self._embeddings[:, rows] * self._scale + self._positions[:, cfg.max_len - n:]
        heads, head_dim = cfg.n_heads, cfg.dim // cfg.n_heads
        future = np.triu(np.ones((n, n), dtype=bool), k=1)
        for (ln1_w, ln1_b, wq, bq, wk, bk, wv, bv, wo, bo,
             ln2_w, ln2_b, w1, b1, w2, b2) in self._blocks:
            h = _layer_norm(x, ln1_w, ln1_b, cfg.layer_norm_eps)
            q = (h @ wq + bq).reshape(m, n, heads, head_dim).transpose(0, 2, 1, 3)
            k = (h @ wk + bk).reshape(m, n, heads, head_dim).transpose(0, 2, 1, 3)
            v = (h @ wv + bv).reshape(m, n, heads, head_dim).transpose(0, 2, 1, 3)
            logits = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim))
            logits[:, :, future] = -np.inf
            logits -= logits.max(axis=-1, keepdims=True)
            weights = np.exp(logits)
            weights /= weights.sum(axis=-1, keepdims=True)
            attended = (weights @ v).transpose(0, 2, 1, 3).reshape(m, n, cfg.dim)
            x = x + attended @ wo + bo
            h = _layer_norm(x, ln2_w, ln2_b, cfg.layer_norm_eps)
            x = x + np.maximum(h @ w1 + b1, 0) @ w2 + b2
        last = _layer_norm(x[:, -1:], *self._final_ln, cfg.layer_norm_eps)[:, 0]
        return np.asarray(last, dtype=np.float32)

    def query(self, recent: Sequence[str]) -> tuple[Array, float] | None:
        """``(vector, offset)``: an item's score is its concatenated member embeddings
        (``[E_1 | E_2 | ...]``) @ vector + offset; None when no item of ``recent`` is known.

        Member m's logits ``E_m h_m`` have mean ``mean_m . h_m`` and variance
        ``h_m' C_m h_m`` over all items, so :func:`combine_logits`' figure
        ``mean_m((s_m - mu_m) / sd_m) * mean(sd) + mean(mu)`` is linear in the
        concatenated embeddings, with weight ``mean(sd) / (M sd_m)`` on member m.
        """
        rows = self._rows(recent)
        if not rows:
            return None
        hidden = self._hidden(rows)
        if len(self.members) == 1:
            return hidden[0], 0.0
        h64 = hidden.astype(np.float64)[:, None, :]  # (members, 1, dim)
        mu = (h64 @ self._means[:, :, None]).ravel()
        sd = np.sqrt(np.maximum((h64 @ self._covs @ h64.transpose(0, 2, 1)).ravel(), 1e-24))
        weights = sd.mean() / (len(sd) * sd)
        vector = (hidden * weights[:, None].astype(np.float32)).reshape(-1)
        return vector, float(mu.mean() - sd.mean() * (mu / sd).mean())

    def user_vector(self, recent: Sequence[str]) -> Array | None:
        """The sequence's representation, or None when no item of it is known.

        ``recent`` is newest first without repeats, as ``StateStore.recent_items``
        hands it; unknown items (newer than the model) are skipped. One member: its
        last hidden state (dim,); an ensemble: the members' states, each weighted by
        the combination, end to end (members * dim,).
        """
        query = self.query(recent)
        return None if query is None else query[0]

    def score(self, recent: Sequence[str], item_ids: Sequence[str]) -> ScoredItems:
        """Scores of the known ``item_ids`` (unknown ones left out; none when no known item)."""
        return self.score_query(self.query(recent), item_ids)

    def score_query(self, query: tuple[Array, float] | None, item_ids: Sequence[str]
                    ) -> ScoredItems:
        """:meth:`score` for a :meth:`query` already computed (one forward pass serves
        both the candidates and the scores of a request)."""
        known = [i for i in item_ids if i in self.item_index]
        if query is None or not known:
            return ScoredItems([])
        rows = np.fromiter((self.item_index[i] for i in known), dtype=np.int64, count=len(known))
        vector, offset = query
        return ScoredItems(known, (self._items[rows] @ vector).astype(np.float64) + offset)

    def top(self, recent: Sequence[str], n: int, exclude: Collection[str] = ()) -> ScoredItems:
        """The ``n`` best next items, best first, leaving out ``exclude``."""
        return self.top_query(self.query(recent), n, exclude)

    def top_query(self, query: tuple[Array, float] | None, n: int,
                  exclude: Collection[str] = ()) -> ScoredItems:
        """:meth:`top` for a :meth:`query` already computed."""
        if query is None or n <= 0:
            return ScoredItems([])
        vector, offset = query
        scores = _matvec(self._items, vector)
        drop = [self.item_index[i] for i in exclude if i in self.item_index]
        scores[drop] = -np.inf
        k = min(n, int(np.isfinite(scores).sum()))
        if k == 0:
            return ScoredItems([])
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return ScoredItems([self.item_ids[r] for r in best],
                           scores[best].astype(np.float64) + offset)
