"""Every cache that listens for changes is wired in the composition root, for this
instance's changes and for other instances' alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tahoe_auth.app import App, build_app
from tahoe_auth.config import Settings
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


def test_registered_caches_hear_local_and_published_changes(tmp_path: Path) -> None:
    app, store = build(tmp_path)
    try:
        local = list(app.notifier._local)
        published = list(store._listeners)
        for listener in app.change_listeners:
            name = type(listener).__name__
            assert any(getattr(f, "__self__", None) is listener for f in local), f"{name}: not applied locally"
            assert any(getattr(f, "__self__", None) is listener for f in published), f"{name}: not subscribed"
    finally:
        app.close()


def test_a_published_change_reaches_a_cache_that_used_to_hear_only_other_instances(tmp_path: Path) -> None:
    app, _ = build(tmp_path)
    try:
        config = app.tenant_config
        config.get("t1")  # cached (an unknown tenant: the defaults)
        assert len(config._cache) == 1
        app.notifier.tenant_changed("t1")
        assert len(config._cache) == 0
    finally:
        app.close()
