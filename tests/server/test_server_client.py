"""The HTTP client on its own: what it says when no server answers, and that its token never
shows in a repr or an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelloop import Client, Settings
from modelloop.exceptions import InvalidInput, StoreError
from modelloop.store import get_store
from modelloop.store._http import HttpArtifactStore, HttpStore
from s3_support import free_port

TOKEN = "mlt_secret-token-value-0123456789"


def test_no_server_is_a_store_error_naming_the_url_never_the_token(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = Client(Settings(home=tmp_path, store_url=url, token=TOKEN))
    assert isinstance(client.store, HttpStore) and isinstance(client.artifacts, HttpArtifactStore)
    for call in (client.store.list_experiments, lambda: client.artifacts.exists("0" * 64)):
        with pytest.raises(StoreError, match="cannot reach the modelloop server") as err:
            call()
        assert url in str(err.value) and TOKEN not in str(err.value)
    assert TOKEN not in repr(client.settings) and TOKEN not in repr(client.store)
    assert TOKEN not in repr(client.artifacts)
    client.close()


def test_server_urls_pick_the_http_backends(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MODELLOOP_TOKEN", TOKEN)
    store = get_store("https://models.example:8443")
    assert isinstance(store, HttpStore) and store.url == "https://models.example:8443"
    store.close()
    settings = Settings.from_env(home=tmp_path, store_url="http://127.0.0.1:1")
    assert settings.remote and settings.token == TOKEN
    assert not Settings(home=tmp_path).remote
    with pytest.raises(InvalidInput, match="CA_BUNDLE"):
        Client(Settings(home=tmp_path, store_url="https://x:1", ca_bundle=str(tmp_path / "no")))
