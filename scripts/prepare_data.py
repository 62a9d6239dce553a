"""Build the shipped data set from the UCI Online Retail parquet file.

Run once; its outputs under ``data/`` are committed::

    .venv/bin/python scripts/prepare_data.py \\
        --source /work/shared/data/online-retail/online_retail.parquet --out data

Writes ``catalog.csv`` (item_id,name,category,price), ``purchases.csv.gz``
(invoice,user_id,item_id,quantity,price,timestamp) and ``categories.json``.
``data/README.md`` documents every step below; keep the two in sync.
Reading parquet needs ``pyarrow`` (a one-off dependency of this script only).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.preprocessing import normalize

#: Real products: five digits plus an optional variant letter or two (85123A, 15056BL).
PRODUCT_CODE = re.compile(r"^\d{5}[A-Z]{0,2}$")
#: Product-shaped codes that are services, not products.
NON_PRODUCT_CODES = frozenset({
    "23444",  # Next Day Carriage
    "23574",  # Packing Charge
    "23702",  # High Resolution Image
})

N_CATEGORIES = 20
RANDOM_STATE = 42
#: Few LSA dimensions give k-means smooth, balanced clusters; 100 left one junk cluster of ~900.
LSA_DIMS = 15

#: Words that say nothing about what kind of product an item is (colours, sizes,
#: packaging, style adjectives); left out of clustering so clusters form by product type.
NOISE_WORDS = frozenset(
    """
    red pink blue white black green ivory cream gold silver purple yellow orange brown grey
    gray natural clear multi colour colours colourful assorted
    small large medium mini jumbo big giant tiny
    set sets pack box of piece pc pcs assorted design designs style
    vintage retro new antique classic french english regency baroque
    spot spots spotty dotcomgiftshop polkadot retrospot paisley spaceboy
    """.split()  # noqa: SIM905 (a word list reads better as text)
)

SMALL_WORDS = frozenset({"a", "an", "and", "of", "the", "in", "on", "with", "for", "to", "or"})
ACRONYMS = frozenset({"LED", "UK", "USB", "DVD", "CD"})


class CategoryInfo(TypedDict):
    top_terms: list[str]
    size: int


def readable_name(description: str) -> str:
    """Title-case a shouting description: "WHITE T-LIGHT HOLDER" -> "White T-Light Holder"."""
    words = re.sub(r",(?=\S)", ", ", description).split()
    out: list[str] = []
    for i, word in enumerate(words):
        upper = word.upper()
        if upper in ACRONYMS:
            out.append(upper)
        elif any(ch.isdigit() for ch in word):
            # Sizes and counts read better lower-case (40x40cm, 125g), bar a leading letter.
            out.append(word[0].upper() + word[1:].lower())
        elif i > 0 and word.lower() in SMALL_WORDS:
            out.append(word.lower())
        else:
            # Capitalise each part after '-' or '/' but not after an apostrophe (Children's).
            out.append(re.sub(r"(^|[-/(])([a-z])", lambda m: m.group(1) + m.group(2).upper(),
                              word.lower()))
    return " ".join(out)


def clean(raw: pd.DataFrame) -> pd.DataFrame:
    """Keep completed purchases of real products by known customers."""
    df = raw.copy()
    df["InvoiceNo"] = df["InvoiceNo"].astype(str).str.strip()
    df["StockCode"] = df["StockCode"].astype(str).str.strip().str.upper()
    keep = (
        ~df["InvoiceNo"].str.startswith("C")
        & df["CustomerID"].notna()
        & (df["Quantity"] > 0)
        & (df["UnitPrice"] > 0)
        & df["StockCode"].str.match(PRODUCT_CODE)
        & ~df["StockCode"].isin(NON_PRODUCT_CODES)
        & df["Description"].notna()
    )
    return df[keep]


def build_catalog(df: pd.DataFrame) -> pd.DataFrame:
    desc = df["Description"].astype(str).str.split().str.join(" ")
    name = (
        desc.groupby(df["StockCode"])
        .agg(lambda s: s.value_counts().sort_index().sort_values(ascending=False,
                                                                   kind="stable").index[0])
        .map(readable_name)
    )
    price = df.groupby("StockCode")["UnitPrice"].median().round(2)
    catalog = pd.DataFrame({"item_id": name.index, "name": name.values,
                            "price": price.loc[name.index].values})
    return catalog.sort_values("item_id").reset_index(drop=True)


def derive_categories(names: pd.Series) -> tuple[np.ndarray, dict[str, CategoryInfo]]:
    """Cluster names (TF-IDF -> LSA -> k-means) and name each cluster by its top terms."""
    stop = list(ENGLISH_STOP_WORDS | NOISE_WORDS)
    tfidf = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b[a-z][a-z]{2,}\b",
                            stop_words=stop, min_df=3, sublinear_tf=True)
    x = tfidf.fit_transform(names)
    svd = TruncatedSVD(n_components=LSA_DIMS, random_state=RANDOM_STATE)
    z = normalize(svd.fit_transform(x))
    km = KMeans(n_clusters=N_CATEGORIES, n_init=10, random_state=RANDOM_STATE)
    labels = km.fit_predict(z)

    terms = np.array(tfidf.get_feature_names_out())
    dense = x.tocsr()
    info: dict[int, list[str]] = {}
    for c in range(N_CATEGORIES):
        mean = np.asarray(dense[labels == c].mean(axis=0)).ravel()
        info[c] = [str(t) for t in terms[np.argsort(-mean, kind="stable")[:10]]]

    # Name clusters from their two top terms; on a clash take the next term that is free.
    names_by_cluster: dict[int, str] = {}
    used: set[str] = set()
    for c in sorted(info, key=lambda c: -(labels == c).sum()):
        top = info[c]
        first = top[0]
        for second in top[1:]:
            label = f"{first.title()} & {second.title()}"
            if label not in used:
                break
        names_by_cluster[c] = label
        used.add(label)

    category = np.array([names_by_cluster[c] for c in labels], dtype=object)
    meta: dict[str, CategoryInfo] = {
        names_by_cluster[c]: {"top_terms": info[c], "size": int((labels == c).sum())}
        for c in sorted(info, key=lambda c: -(labels == c).sum())
    }
    return category, meta


def build_purchases(df: pd.DataFrame) -> pd.DataFrame:
    # InvoiceDate is naive UK shop time; it is stored as if UTC (documented in README).
    ts = df["InvoiceDate"].astype("datetime64[s]").astype("int64")
    out = pd.DataFrame({
        "invoice": df["InvoiceNo"].values,
        "user_id": df["CustomerID"].astype("int64").astype(str).values,
        "item_id": df["StockCode"].values,
        "quantity": df["Quantity"].astype("int64").values,
        "price": df["UnitPrice"].round(2).values,
        "timestamp": ts.values,
    })
    return out.sort_values(["timestamp", "invoice"], kind="stable").reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path,
                        default=Path("/work/shared/data/online-retail/online_retail.parquet"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data")
    args = parser.parse_args()

    raw = pd.read_parquet(args.source)
    df = clean(raw)
    catalog = build_catalog(df)
    category, meta = derive_categories(catalog["name"])
    catalog.insert(2, "category", category)
    purchases = build_purchases(df)

    args.out.mkdir(parents=True, exist_ok=True)
    catalog.to_csv(args.out / "catalog.csv", index=False)
    purchases.to_csv(args.out / "purchases.csv.gz", index=False,
                     compression={"method": "gzip", "compresslevel": 9, "mtime": 0})
    (args.out / "categories.json").write_text(json.dumps(meta, indent=2) + "\n")

    print(f"raw rows {len(raw)}, kept {len(df)}, items {len(catalog)}, "
          f"users {purchases['user_id'].nunique()}, invoices {purchases['invoice'].nunique()}")
    for label, m in meta.items():
        print(f"{m['size']:5d}  {label:32s} {' '.join(m['top_terms'][:6])}")


if __name__ == "__main__":
    main()
