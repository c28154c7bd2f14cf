"""LoRAs by URL: real downloads from a stdlib HTTP server on 127.0.0.1 into a real temporary LoRA folder.

The server counts requests, so a cache hit is proven to make none.
"""
import json
import os
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from safetensors.torch import save

from ltx_outpaint.download import DownloadPolicy, redact
from ltx_outpaint.errors import InputError
from ltx_outpaint.lora_fetch import CACHE_DIR_NAME, MAX_LORA_BYTES, fetch_lora, lora_cache_path

LORA = save({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 16),
             "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(16, 4)})
FULL = save({"model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": torch.ones(16, 16)})
BODIES = {
    "/style.safetensors": LORA,
    "/signed/My%20Style%20v2.safetensors": LORA,
    "/pickle.safetensors": pickle.dumps({"weights": [1, 2, 3]}),
    "/readme.safetensors": b"<html>Please log in</html>",
    "/checkpoint.safetensors": FULL,
}
LOOP = DownloadPolicy(allow_http=True, allow_loopback=True, max_bytes=1 << 20)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        body = BODIES.get(self.path.split("?")[0])
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def cache_files(loras_dir):
    cache = os.path.join(loras_dir, CACHE_DIR_NAME)
    return sorted(os.listdir(cache)) if os.path.isdir(cache) else []


def test_download_then_cache_hit_without_request(server, tmp_path):
    loras = str(tmp_path / "loras")
    url = server.url + "/style.safetensors"
    path = fetch_lora(url, loras, policy=LOOP)
    assert path == lora_cache_path(url, loras)
    assert os.path.dirname(path) == os.path.join(loras, CACHE_DIR_NAME)
    assert os.path.basename(path).endswith("-style.safetensors")
    with open(path, "rb") as f:
        assert f.read() == LORA
    assert len(server.requests) == 1
    side = json.load(open(path[: -len(".safetensors")] + ".json"))
    assert side["url"] == url and side["downloaded_at"].endswith("Z") and side["bytes"] == len(LORA)
    assert cache_files(loras) == sorted([os.path.basename(path), os.path.basename(path)[:-12] + ".json"])

    assert fetch_lora(url, loras, policy=LOOP) == path
    assert fetch_lora(url, loras, policy=DownloadPolicy()) == path  # https-only policy: still no fetch needed
    assert len(server.requests) == 1  # cache hits made no request


@pytest.mark.parametrize("name,why", [("pickle", "not a valid safetensors file"),
                                      ("readme", "not a valid safetensors file"),
                                      ("checkpoint", "no LoRA weights")])
def test_bad_bodies_refused_and_not_cached(server, tmp_path, name, why):
    loras = str(tmp_path / "loras")
    url = f"{server.url}/{name}.safetensors"
    with pytest.raises(InputError) as ei:
        fetch_lora(url, loras, policy=LOOP)
    assert ei.value.field == "lora" and why in str(ei.value) and url in str(ei.value)
    assert "ltx_outpaint_dl_" not in str(ei.value)  # the temp name is not shown to the user
    assert cache_files(loras) == []
    with pytest.raises(InputError):
        fetch_lora(url, loras, policy=LOOP)
    assert len(server.requests) == 2  # nothing was cached: it was fetched again


def test_over_cap_body_refused_and_not_cached(server, tmp_path):
    loras = str(tmp_path / "loras")
    with pytest.raises(InputError, match="download limit"):
        fetch_lora(server.url + "/style.safetensors", loras,
                   policy=DownloadPolicy(allow_http=True, allow_loopback=True, max_bytes=len(LORA) - 1))
    assert cache_files(loras) == []


def test_url_with_query_cached_under_stable_name_without_the_query(server, tmp_path, caplog):
    loras = str(tmp_path / "loras")
    url = server.url + "/signed/My%20Style%20v2.safetensors?token=SECRET123&expires=9"
    caplog.set_level("DEBUG")
    path = fetch_lora(url, loras, policy=LOOP)
    assert path == lora_cache_path(url, loras) == lora_cache_path(" " + url + " ", loras)
    assert os.path.basename(path).endswith("-My_Style_v2.safetensors")
    assert fetch_lora(url, loras, policy=LOOP) == path
    assert server.requests == ["/signed/My%20Style%20v2.safetensors?token=SECRET123&expires=9"]
    other = lora_cache_path(url.replace("SECRET123", "OTHER"), loras)
    assert other != path and os.path.basename(other)[16:] == os.path.basename(path)[16:]
    for root, _, files in os.walk(loras):
        for name in files:
            assert "SECRET" not in name and "token" not in name
            with open(os.path.join(root, name), "rb") as f:
                assert b"SECRET123" not in f.read()
    side = json.load(open(path[: -len(".safetensors")] + ".json"))
    assert side["url"] == redact(url) and side["url"].startswith(server.url + "/signed/My")
    assert "?" not in side["url"]
    # No log line shows the query: ours are redacted, httpx's own request lines are silenced.
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("ltx_outpaint")]
    assert ours and not any("SECRET123" in r.getMessage() for r in caplog.records)


def test_default_policy_refuses_loopback_http(server, tmp_path, monkeypatch):
    monkeypatch.delenv("LTX_OUTPAINT_ALLOW_PRIVATE_HOSTS", raising=False)
    monkeypatch.delenv("LTX_OUTPAINT_ALLOW_HTTP", raising=False)
    loras = str(tmp_path / "loras")
    with pytest.raises(InputError) as ei:
        fetch_lora(server.url + "/style.safetensors", loras)
    assert ei.value.field == "lora" and "http://" in str(ei.value)
    assert server.requests == [] and cache_files(loras) == []
    assert MAX_LORA_BYTES == 3 << 30


def test_corrupt_cached_file_is_downloaded_again(server, tmp_path):
    loras = str(tmp_path / "loras")
    url = server.url + "/style.safetensors"
    path = lora_cache_path(url, loras)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"truncated")
    assert fetch_lora(url, loras, policy=LOOP) == path
    assert len(server.requests) == 1
    with open(path, "rb") as f:
        assert f.read() == LORA


@pytest.mark.parametrize("url,suffix", [
    ("https://example.com/a/b/", "-b.safetensors"),
    ("https://example.com/", "-lora.safetensors"),
    ("https://example.com/dl?file=x.safetensors", "-dl.safetensors"),
    ("https://example.com/../../etc/passwd", "-passwd.safetensors"),
    ("https://example.com/" + "x" * 300 + ".SAFETENSORS", "-" + "x" * 80 + ".safetensors"),
])
def test_cache_names_are_sanitised(tmp_path, url, suffix):
    path = lora_cache_path(url, str(tmp_path))
    assert os.path.dirname(path) == os.path.join(str(tmp_path), CACHE_DIR_NAME)
    name = os.path.basename(path)
    assert name.endswith(suffix) and len(name.split("-", 1)[0]) == 16
