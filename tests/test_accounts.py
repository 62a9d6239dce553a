"""AccountStore on SQLite (and on the real PostgreSQL), co-purchases and the session secret."""

from __future__ import annotations

import gzip
import os
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core.errors import InvalidRequest
from infra.accounts import (
    MAX_QUANTITY,
    AccountStore,
    CoPurchases,
    UsernameTaken,
    load_co_purchases,
    load_or_create_secret,
)
from tests.fakes import toy_accounts


@pytest.fixture
def store() -> Iterator[AccountStore]:
    accounts = toy_accounts()
    yield accounts
    accounts.close()


def test_passwords_are_stored_only_as_salted_hashes(store: AccountStore) -> None:
    store.create_user("alice", "s3cret-password")
    store.create_user("bob", "s3cret-password")
    with store.engine.connect() as conn:
        hashes = [row[0] for row in conn.exec_driver_sql("SELECT password_hash FROM users")]
    assert all("s3cret-password" not in h for h in hashes)
    assert hashes[0] != hashes[1]  # salted
    assert all(h.startswith("pbkdf2:sha256") for h in hashes)


def test_the_default_password_hash_is_scrypt() -> None:
    accounts = AccountStore("sqlite://")
    accounts.create_schema()
    accounts.create_user("carol", "another-password")
    with accounts.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT password_hash FROM users").scalar_one() \
            .startswith("scrypt:")
    assert accounts.authenticate("carol", "another-password") is not None


def test_authenticate_accepts_the_right_password_only(store: AccountStore) -> None:
    user = store.create_user("Alice", "correct horse", categories=["Mugs", "Bags", "Mugs"])
    assert user.username == "alice" and user.categories == ("Bags", "Mugs")
    assert store.authenticate("ALICE ", "correct horse") == user
    assert store.authenticate("alice", "Correct horse") is None
    assert store.authenticate("nobody", "correct horse") is None


def test_a_taken_username_is_refused_case_insensitively(store: AccountStore) -> None:
    store.create_user("alice", "password-one")
    with pytest.raises(UsernameTaken):
        store.create_user("ALICE", "password-two")


@pytest.mark.parametrize(("username", "password"), [
    ("al", "long enough"), ("has space", "long enough"), ("x" * 33, "long enough"),
    ("alice", "short"),
])
def test_bad_usernames_and_short_passwords_are_refused(
    store: AccountStore, username: str, password: str
) -> None:
    with pytest.raises(InvalidRequest):
        store.create_user(username, password)


def test_preferred_categories_can_be_replaced(store: AccountStore) -> None:
    user = store.create_user("alice", "password-one", ["Mugs"])
    assert store.set_categories(user.id, ["Bags", " ", "Candles"]) == ("Bags", "Candles")
    found = store.get_user(user.id)
    assert found is not None and found.categories == ("Bags", "Candles")


def test_a_second_rating_replaces_the_first(store: AccountStore) -> None:
    alice = store.create_user("alice", "password-one")
    bob = store.create_user("bob", "password-two")
    store.rate(alice.id, "i1", 2, "meh")
    store.rate(bob.id, "i1", 5, "great")
    store.rate(alice.id, "i1", 4, "better than I thought")
    summary = store.rating_summary("i1")
    assert (summary.average, summary.count) == (4.5, 2)
    mine = store.user_rating(alice.id, "i1")
    assert mine is not None and (mine.rating, mine.review) == (4, "better than I thought")
    assert [r.username for r in store.reviews("i1")] == ["alice", "bob"]
    assert [r.item_id for r in store.user_ratings(bob.id)] == ["i1"]
    assert store.rating_summary("unrated") .count == 0
    with pytest.raises(InvalidRequest):
        store.rate(alice.id, "i1", 6)


def test_cart_adds_up_caps_and_removes(store: AccountStore) -> None:
    assert store.add_to_cart("anon:1", "a", 2) == 2
    assert store.add_to_cart("anon:1", "a", 3) == 5
    store.add_to_cart("anon:1", "b")
    assert store.add_to_cart("anon:1", "b", 500) == MAX_QUANTITY
    store.set_cart_quantity("anon:1", "b", 0)
    assert store.cart("anon:1") == {"a": 5}
    assert store.cart("anon:2") == {}


def test_a_visitors_cart_moves_to_the_user_at_login(store: AccountStore) -> None:
    user = store.create_user("alice", "password-one")
    store.add_to_cart(user.shopper_id, "a", 1)
    store.add_to_cart("anon:1", "a", 2)
    store.add_to_cart("anon:1", "b", 1)
    store.merge_cart("anon:1", user.shopper_id)
    assert store.cart(user.shopper_id) == {"a": 3, "b": 1}
    assert store.cart("anon:1") == {}


def test_checkout_turns_the_cart_into_an_order_seen_only_by_its_owner(
    store: AccountStore,
) -> None:
    alice = store.create_user("alice", "password-one")
    bob = store.create_user("bob", "password-two")
    store.add_to_cart(alice.shopper_id, "a", 2)
    store.add_to_cart(alice.shopper_id, "gone", 1)  # no longer sold: left out
    order = store.checkout(alice.id, alice.shopper_id, {"a": 1.25, "b": 3.0})
    assert order is not None and order.total == 2.5
    assert [(ln.item_id, ln.quantity) for ln in order.lines] == [("a", 2)]
    assert store.cart(alice.shopper_id) == {}
    assert [o.id for o in store.orders(alice.id)] == [order.id]
    assert store.orders(bob.id) == []
    assert store.checkout(alice.id, alice.shopper_id, {"a": 1.0}) is None
    assert store.baskets() == [["a"]]


def test_ending_a_users_sessions_moves_only_their_generation(store: AccountStore) -> None:
    alice = store.create_user("alice", "password-1")
    bob = store.create_user("bob", "password-2")
    assert store.session_generation(alice.id) == 0
    assert store.end_sessions(alice.id) == 1
    assert store.end_sessions(alice.id) == 2
    assert (store.session_generation(alice.id), store.session_generation(bob.id)) == (2, 0)


def test_the_in_memory_store_serves_several_threads(store: AccountStore) -> None:
    def add(n: int) -> int:
        return store.add_to_cart("anon:t", f"i{n % 5}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(100)))
    assert sum(store.cart("anon:t").values()) == 100


def test_co_purchases_count_baskets_and_new_orders() -> None:
    co = CoPurchases(top_n=2)
    co.fit_baskets(["b1", "b1", "b1", "b2", "b2", "b2", "b3", "b3"],
                   ["x", "y", "z", "x", "y", "y", "x", "w"], keep=["x", "y", "z"])
    assert co.also_bought("x", 5) == [("y", 2), ("z", 1)]
    co.add_basket(["x", "z", "z"])
    co.add_basket(["x", "z"])
    assert co.also_bought("x", 1) == [("z", 3)]
    assert co.also_bought("w", 5) == []


def test_co_purchases_load_from_the_shipped_file_format(tmp_path: Path) -> None:
    lines = ["invoice,user_id,item_id,quantity,price,timestamp",
             "536365,17850,85123A,6,2.55,1291191960", "536365,17850,71053,6,3.39,1291191960",
             "536366,17850,85123A,1,2.55,1291192000", "536366,17850,22633,2,1.85,1291192000"]
    with gzip.open(tmp_path / "purchases.csv.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    co = load_co_purchases(tmp_path)
    assert co.also_bought("85123A", 5) == [("22633", 1), ("71053", 1)]
    assert len(load_co_purchases(tmp_path / "missing")) == 0


def test_the_secret_is_made_once_private_and_reused(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path / "state")
    assert len(first) >= 32
    assert load_or_create_secret(tmp_path / "state") == first
    mode = stat.S_IMODE(os.stat(tmp_path / "state" / "secret_key").st_mode)
    assert mode == 0o600
    with ThreadPoolExecutor(4) as pool:  # workers starting together agree
        assert set(pool.map(load_or_create_secret, [tmp_path / "s2"] * 8)) == {
            (tmp_path / "s2" / "secret_key").read_text()}


@pytest.mark.integration
def test_the_account_store_works_on_the_real_database(database_url: str) -> None:
    schema = f"acc_{uuid.uuid4().hex[:8]}" if database_url.startswith("postgresql") else None
    store = AccountStore(database_url, schema=schema, password_method="pbkdf2:sha256:1000")
    store.create_schema()
    try:
        name = f"u{uuid.uuid4().hex[:10]}"
        user = store.create_user(name, "password-one", ["Mugs"])
        with pytest.raises(UsernameTaken):
            store.create_user(name, "password-two")
        assert store.authenticate(name, "password-one") == user
        store.rate(user.id, "i1", 3)
        store.rate(user.id, "i1", 5, "changed my mind")
        assert store.rating_summary("i1").average == 5.0
        store.add_to_cart(user.shopper_id, "i1", 98)
        assert store.add_to_cart(user.shopper_id, "i1", 5) == MAX_QUANTITY
        order = store.checkout(user.id, user.shopper_id, {"i1": 2.0})
        assert order is not None and store.orders(user.id)[0].total == 198.0
        assert store.end_sessions(user.id) == 1
        assert store.session_generation(user.id) == 1
    finally:
        if schema:
            store.drop_schema()
        store.close()
