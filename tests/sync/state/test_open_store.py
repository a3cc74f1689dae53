"""`open_store(url)`: the accepted state URL forms and clear errors otherwise.

See docs/operations.md#state-stores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.state import DEFAULT_STATE_URL, PoolChange, StateStore, open_store
from sync.state.redis import RedisStateStore
from sync.state.sqlite import SqliteStateStore


def _touch(store: StateStore) -> None:
    assert store.commit({"p": 0}, [PoolChange("p", "a", None, {("a", "day:x"): 1})], [])


def test_given_a_relative_sqlite_url_then_the_file_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    store = open_store("sqlite:///state.db")
    try:
        _touch(store)
    finally:
        store.close()

    assert isinstance(store, SqliteStateStore)
    assert (tmp_path / "state.db").is_file()


def test_given_a_relative_url_in_a_missing_folder_then_the_folder_is_created(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)

    open_store("sqlite:///var/state/router.db").close()

    assert (tmp_path / "var" / "state" / "router.db").is_file()


def test_given_an_absolute_sqlite_url_with_four_slashes_then_that_exact_path(
    tmp_path, monkeypatch
):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "abs.db"
    assert str(target).startswith("/")

    store = open_store(f"sqlite:///{target}")  # sqlite:////tmp/.../abs.db
    store.close()

    assert isinstance(store, SqliteStateStore)
    assert store.path == Path(target)
    assert target.is_file()
    assert not list(elsewhere.iterdir())


def test_given_the_default_url_then_an_embedded_file_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    open_store(DEFAULT_STATE_URL).close()

    assert DEFAULT_STATE_URL == "sqlite:///account-router-state.db"
    assert (tmp_path / "account-router-state.db").is_file()


def test_given_a_sqlite_url_then_the_file_is_in_wal_mode(tmp_path):
    import sqlite3

    open_store(f"sqlite:///{tmp_path / 'wal.db'}").close()

    with sqlite3.connect(tmp_path / "wal.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_given_a_redis_url_then_a_working_redis_store(redis_url):
    store = open_store(redis_url)
    try:
        _touch(store)
        assert store.load_pools({"p": {"a": "day:x"}})["p"].counts == {"a": 1}
    finally:
        store.close()

    assert isinstance(store, RedisStateStore)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "redis://localhost", "rediss://cache.internal:6380/2"]
)
def test_given_redis_url_forms_then_a_redis_store_without_connecting_yet(url):
    store = open_store(url)
    store.close()

    assert isinstance(store, RedisStateStore)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "state.db",
        "/tmp/state.db",
        "sqlite://state.db",
        "sqlite:///",
        "sqlite:state.db",
        "postgresql://localhost/router",
        "memory://",
        "redis://",
        "redis://:6379/0",
        "redis://localhost:6379/zero",
        "redis://localhost:port/0",
        "http://localhost:6379/0",
    ],
)
def test_given_an_unsupported_url_then_valueerror_naming_the_accepted_forms(url):
    with pytest.raises(ValueError) as excinfo:
        open_store(url)

    message = str(excinfo.value)
    assert "sqlite:///" in message
    assert "sqlite:////" in message
    assert "redis://host:port/db" in message


def test_given_a_redis_url_with_a_password_then_the_repr_never_shows_it():
    store = open_store("redis://:s3cret@cache.internal:6380/2")
    store.close()

    assert "s3cret" not in repr(store)
    assert "cache.internal:6380/2" in repr(store)


@pytest.mark.parametrize(
    "url",
    ["redis://:s3cret@cache.internal:port/2", "redis://:s3cret@cache.internal:6380/db",
     "redis://:s3cret@/0"],
)
def test_given_a_bad_redis_url_with_a_password_then_the_error_masks_it(url):
    with pytest.raises(ValueError) as excinfo:
        open_store(url)

    assert "s3cret" not in str(excinfo.value)
    assert ":***@" in str(excinfo.value)
