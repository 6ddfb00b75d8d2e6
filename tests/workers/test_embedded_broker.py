"""The embedded broker never hands a worker a half-written message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport import filesystem

from node import settings as node_settings
from workers.app import create_app
from workers.embedded_broker import TRANSPORT, Channel


@pytest.fixture
def channel(tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with Connection("filesystem://", transport=TRANSPORT, transport_options=options) as conn:
        yield conn.default_channel, folder


def test_message_round_trip(channel) -> None:  # type: ignore[no-untyped-def]
    chan, folder = channel
    assert isinstance(chan, Channel)
    chan._put("models", {"body": "x" * 100_000})
    assert chan._get("models") == {"body": "x" * 100_000}
    assert list(folder.iterdir()) == []


def test_the_message_appears_under_its_final_name_only_when_whole(channel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    chan, folder = channel
    seen: list[tuple[list[str], int]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        # Just before the rename: nothing a consumer takes is there, the partial file is whole.
        seen.append((sorted(os.listdir(folder)), os.path.getsize(src)))
        with pytest.raises(filesystem.Empty):
            chan._get("models")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    chan._put("models", {"body": "y" * 50_000})
    ((names, size),) = seen
    assert len(names) == 1 and names[0].startswith(".") and names[0].endswith(".partial")
    assert size > 50_000
    assert chan._get("models") == {"body": "y" * 50_000}


def test_kombus_own_put_exposes_the_file_before_it_is_written(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Why the subclass exists: kombu's filesystem ``_put`` creates the final name first."""
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    with Connection("filesystem://", transport_options=options) as conn:
        chan = conn.default_channel
        assert type(chan) is filesystem.Channel
        sizes: list[int] = []
        real_lock = filesystem.lock

        def lock(fh, flags):  # type: ignore[no-untyped-def]  # called after open, before write
            sizes.extend(p.stat().st_size for p in folder.glob("*.models.msg"))
            return real_lock(fh, flags)

        monkeypatch.setattr(filesystem, "lock", lock)
        chan._put("models", {"body": "z"})
    assert sizes == [0]  # visible to a consumer, and empty


def test_the_node_uses_it_for_the_embedded_broker(tmp_path: Path) -> None:
    node_settings.reset()
    try:
        settings = node_settings.configure(home=tmp_path / "home")
        assert create_app(settings).conf.broker_transport == TRANSPORT
        redis = node_settings.configure(home=tmp_path / "home", broker_url="redis://127.0.0.1:6379/0")
        assert create_app(redis).conf.broker_transport is None
    finally:
        node_settings.reset()
