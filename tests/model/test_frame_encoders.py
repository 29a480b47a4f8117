"""Pretrained weights as torchvision users expect them: downloaded into torchvision's cache with the hash in the
file name checked, taken from the cache after, and one line naming the file, its URL and where to put it when
that fails. A local HTTP server on 127.0.0.1 stands in for the download site; the mechanism is torchvision's."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
from torchvision.models import Weights, WeightsEnum

from qslr.model.frame_encoders import WeightsUnavailableError, download_weights, tiny_cnn_encoder


@pytest.fixture()
def site(tmp_path):
    """A folder served over HTTP on 127.0.0.1: (folder, base URL)."""
    folder = tmp_path / "site"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def weights_at(url: str) -> WeightsEnum:
    return WeightsEnum("TinyWeights", [("LOCAL", Weights(url=url, transforms=None, meta={}))]).LOCAL


def publish(folder: Path, state: dict, digest: str | None = None) -> str:
    """Save ``state`` under torchvision's naming (name-<first hex digits of its sha256>.pth); the file name."""
    staging = folder / "staging.pth"
    torch.save(state, staging)
    digest = digest or hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    name = f"tiny-{digest}.pth"
    staging.rename(folder / name)
    return name


def test_weights_download_into_the_cache_then_load_from_it(site, cache):
    folder, base = site
    reference = tiny_cnn_encoder(channels=(4, 8)).trunk.state_dict()
    member = weights_at(f"{base}/{publish(folder, reference)}")
    state = download_weights(member, "tiny_cnn")
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)
    assert [p.name for p in cache.iterdir()] == [Path(member.url).name]
    for published in folder.iterdir():
        published.unlink()  # the site is gone: the second load comes from the cache
    again = download_weights(member, "tiny_cnn")
    assert all(torch.equal(again[k], reference[k]) for k in reference)


def test_a_download_whose_hash_does_not_match_is_refused_and_not_cached(site, cache):
    folder, base = site
    name = publish(folder, {"weight": torch.ones(3)}, digest="0123abcd")  # not the file's hash
    with pytest.raises(WeightsUnavailableError) as refused:
        download_weights(weights_at(f"{base}/{name}"), "tiny_cnn")
    message = str(refused.value)
    assert "\n" not in message and "hash" in message and name in message and f"{base}/{name}" in message
    assert not cache.exists() or list(cache.iterdir()) == []  # neither the file nor a partial download


def test_without_a_network_one_line_names_the_file_its_url_and_where_to_put_it(cache):
    # A port nothing listens on: the connection is refused at once, as on a machine without network.
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet18-f37072fd.pth"
    with pytest.raises(WeightsUnavailableError) as refused:
        download_weights(weights_at(url), "resnet18")
    message = str(refused.value)
    assert "\n" not in message and "resnet18-f37072fd.pth" in message and url in message
    assert str(cache / "resnet18-f37072fd.pth") in message
