"""Every cache that listens for changes is wired in the composition root, for this
instance's changes and for other instances' alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tahoe_auth.app import App, build_app
from tahoe_auth.config import Settings
from tahoe_auth.store.db import SYSTEM
from tahoe_auth.store.kv import MemoryStore


def _listeners_in(root: object) -> set[int]:
    """Objects of ours, reachable from the app's attributes, that have `apply_change`."""
    found: dict[int, object] = {}
    seen: set[int] = set()
    pending: list[Any] = [root]
    while pending:
        obj = pending.pop()
        if id(obj) in seen or not type(obj).__module__.startswith("tahoe_auth"):
            continue
        seen.add(id(obj))
        if callable(getattr(obj, "apply_change", None)) and obj is not root:
            found[id(obj)] = obj
        attributes = getattr(obj, "__dict__", {})
        for value in attributes.values():
            pending.extend(value if isinstance(value, list | tuple) else [value])
    return set(found)


def build(tmp_path: Path) -> tuple[App, MemoryStore]:
    from tahoe_auth import migrate

    url = f"sqlite:///{tmp_path / 'tahoe.db'}"
    migrate.upgrade(url)
    store = MemoryStore()
    settings = Settings.from_env({"TAHOE_DATABASE_URL": url, "TAHOE_VAR_DIR": str(tmp_path / "var")})
    return build_app(settings, store=store), store


def test_every_cache_with_a_change_channel_is_registered(tmp_path: Path) -> None:
    app, _ = build(tmp_path)
    try:
        registered = {id(listener) for listener in app.change_listeners}
        assert registered == _listeners_in(app)
        assert len(registered) >= 5
    finally:
        app.close()


def test_registered_caches_hear_every_path_through_the_feed(tmp_path: Path) -> None:
    app, store = build(tmp_path)
    try:
        feed = app.changes
        heard = list(feed._listeners)
        for listener in app.change_listeners:
            name = type(listener).__name__
            assert any(getattr(f, "__self__", None) is listener for f in heard), f"{name}: not on the feed"
        assert feed in app.notifier._sinks, "this instance's changes do not reach the feed"
        assert feed.on_published in store._listeners, "published changes do not reach the feed"
    finally:
        app.close()


def test_a_change_reaches_the_caches_once_its_transaction_commits(tmp_path: Path) -> None:
    app, _ = build(tmp_path)
    try:
        config = app.tenant_config
        config.get("t1")  # cached (an unknown tenant: the defaults)
        with app.db.unit_of_work(SYSTEM) as uow:
            app.notifier.tenant_changed(uow, "t1")
            assert len(config._cache) == 1, "applied before the change committed"
            uow.commit()
        assert len(config._cache) == 0
        config.get("t1")
        with app.db.unit_of_work(SYSTEM) as uow:
            app.notifier.tenant_changed(uow, "t1")
        assert len(config._cache) == 1, "a rolled-back change was applied"
    finally:
        app.close()
