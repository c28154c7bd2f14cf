"""The SSRF-safe downloader against a real local HTTP(S) server on 127.0.0.1.

Every test runs under a guard that refuses any socket connection not to 127.0.0.1, so a
refused address (10.0.0.1, 169.254.169.254, ...) provably never gets a connection attempt.
"""
import ipaddress
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import skip_or_fail

from ltx_outpaint.download import DownloadError, DownloadPolicy, _refusal, download, is_url, policy_from_env
from ltx_outpaint.errors import InputError

FILE = random.Random(0).randbytes(300_000)
BIG = b"x" * 5000
CAP = 1000
LOOP = DownloadPolicy(allow_http=True, allow_loopback=True)  # what tests opt in to


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code, body=b"", **headers):
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        srv = self.server
        path = self.path.split("?")[0]
        srv.requests.append((self.path, self.headers.get("Host")))
        if path == "/file":
            self._send(200, FILE, Content_Type="application/octet-stream")
        elif path == "/big":
            self._send(200, BIG)
        elif path == "/stream-big":  # chunked, no Content-Length
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(20):
                    self.wfile.write(b"%x\r\n%s\r\n" % (500, b"y" * 500))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up at the cap
        elif path == "/echo-host":
            self._send(200, self.headers.get("Host", "").encode())
        elif path == "/redirect-private":
            self._send(302, Location="http://10.0.0.1/x")
        elif path == "/redirect-metadata":
            self._send(302, Location="http://169.254.169.254/latest")
        elif path == "/redirect-http":  # https -> http downgrade
            self._send(302, Location=f"http://{self.headers.get('Host')}/file")
        elif path == "/redirect-ftp":
            self._send(302, Location="ftp://127.0.0.1/x")
        elif path.startswith("/chain/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(307 if n % 2 else 301, Location=f"/chain/{n - 1}" if n else "/file?sig=SECRET2")
        elif path == "/loop":
            self._send(302, Location="/loop")
        elif path == "/slow":
            srv.stop.wait(2)
            self._send(200, b"late")
        else:
            self._send(404, b"nope")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass


def _serve(tls_context=None):
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.requests, srv.stop, srv.sni = [], threading.Event(), []
    if tls_context:
        srv.socket = tls_context.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def _stop(srv):
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def _is_ip(s):
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any connection attempt to somewhere other than 127.0.0.1 (recording all of them), and
    any DNS lookup other than of IP literals and localhost (tests map names with `fake_dns`)."""
    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def local_getaddrinfo(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else str(host)
        if h != "localhost" and not (h.isdigit() or _is_ip(h)):
            raise AssertionError(f"test tried to resolve {h!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded(sock, address):
        attempts.append(address)
        if not (isinstance(address, tuple) and address[0] == "127.0.0.1"):
            raise AssertionError(f"test tried to connect to {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", local_getaddrinfo)
    yield attempts
    assert all(a[0] == "127.0.0.1" for a in attempts), attempts


@pytest.fixture(scope="module")
def server():
    srv = _serve()
    yield srv
    _stop(srv)


@pytest.fixture
def srv(server):
    server.requests.clear()
    return server


@pytest.fixture
def fake_dns(monkeypatch):
    """Resolve chosen names (each to a list of answers, one per lookup); others the real way."""
    names, real = {}, socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            answers = names[host]
            ip = answers.pop(0) if len(answers) > 1 else answers[0]
            if ip is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names


def base(srv, scheme="http", host="127.0.0.1"):
    return f"{scheme}://{host}:{srv.server_address[1]}"


def refused(url, *, policy=DownloadPolicy(), field="url", dest_dir=None):
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir, policy=policy, field=field)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")
    return str(info.value)


# ---- refused before any connection ---------------------------------------------------------


def test_default_policy_refuses_loopback_http_and_https(srv, loopback_only):
    msg = refused(base(srv) + "/file")
    assert "http:// URLs are not allowed" in msg and "use https://" in msg
    msg = refused(base(srv, "https") + "/file", field="path_or_url")
    assert msg.startswith("path_or_url: refused https://127.0.0.1:")
    assert "loopback address" in msg and "LTX_OUTPAINT_ALLOW_PRIVATE_HOSTS=1" in msg
    msg = refused(base(srv) + "/file", policy=DownloadPolicy(allow_http=True))
    assert "loopback" in msg
    assert srv.requests == [] and loopback_only == []


def test_localhost_name_is_refused_by_default(srv, loopback_only):
    msg = refused(base(srv, "https", "localhost") + "/file")
    assert "localhost (resolves to" in msg and "loopback address" in msg
    assert srv.requests == [] and loopback_only == []


@pytest.mark.parametrize("url, reason", [
    ("https://10.0.0.1/x", "private network address"),
    ("https://172.16.5.4/x", "private network address"),
    ("https://192.168.1.10/x", "private network address"),
    ("https://[fd00::1]/x", "private network address"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[fe80::1]/x", "link-local"),
    ("https://[::ffff:169.254.169.254]/x", "link-local"),  # IPv4-mapped IPv6
    ("https://[64:ff9b::a9fe:a9fe]/x", "link-local"),      # NAT64 of 169.254.169.254
    ("https://[::1]/x", "loopback"),
    ("https://[::ffff:127.0.0.1]/x", "loopback"),
    ("https://2130706433/x", "loopback"),                   # decimal 127.0.0.1
    ("https://0.0.0.0/x", "unspecified"),
    ("https://224.0.0.1/x", "multicast"),
    ("https://240.0.0.1/x", "reserved"),
    ("https://100.64.0.1/x", "not a public internet address"),
])
def test_non_public_addresses_are_refused_without_connecting(url, reason, loopback_only):
    msg = refused(url)
    assert msg.startswith("url: refused https://") and reason in msg
    assert loopback_only == []


@pytest.mark.parametrize("url", ["https://169.254.169.254/latest", "https://[fe80::1]/", "https://224.0.0.1/",
                                 "https://0.0.0.0/", "https://240.0.0.1/"])
def test_always_refused_even_with_every_opt_in(url, loopback_only):
    policy = DownloadPolicy(allow_http=True, allow_private_hosts=True, allow_loopback=True)
    assert "never allowed" in refused(url, policy=policy)
    assert loopback_only == []


def test_private_hosts_opt_in_covers_lan_ranges_and_loopback():
    lan = DownloadPolicy(allow_private_hosts=True)
    for ip in ("10.1.2.3", "172.31.0.1", "192.168.0.2", "fd12::1", "127.0.0.1", "::1", "8.8.8.8"):
        assert _refusal(ipaddress.ip_address(ip), lan) is None, ip
    loop = DownloadPolicy(allow_loopback=True)
    assert _refusal(ipaddress.ip_address("127.0.0.2"), loop) is None
    assert "private" in _refusal(ipaddress.ip_address("10.1.2.3"), loop)
    assert _refusal(ipaddress.ip_address("93.184.215.14"), DownloadPolicy()) is None


def test_bad_urls(loopback_only):
    assert "ftp:// URLs are not allowed" in refused("ftp://example.com/a.mp4")
    assert "use https:// or http://" in refused("file:///etc/passwd", policy=LOOP)
    assert "user name or password" in refused("https://example.com@127.0.0.1/x")
    assert "user name or password" in refused("https://user:pw@example.com/x")
    assert "no host" in refused("https:///x")
    assert "not a valid URL" in refused("https://[::1/x")
    for url in ("https://exa mple.com/", "https://example.com:99999/", "https://ex%41mple.com/",
                "https://[fe80::1%25eth0]/", "https://example.com:0/"):
        assert "invalid host or port" in refused(url), url
    assert loopback_only == []


def test_unresolvable_host(fake_dns, loopback_only):
    fake_dns["nowhere.test"] = [None]
    assert "cannot resolve host 'nowhere.test'" in refused("https://nowhere.test/a.mp4")
    assert loopback_only == []


def test_any_bad_address_in_the_answer_refuses(monkeypatch, loopback_only):
    def getaddrinfo(host, port, *a, **k):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("93.184.215.14", "10.0.0.7")]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    msg = refused("https://mixed.test/x")
    assert "mixed.test (resolves to 10.0.0.7) is a private network address" in msg
    assert loopback_only == []


# ---- real downloads from the loopback server -----------------------------------------------


def test_download_with_opt_in_gives_identical_bytes(srv, tmp_path):
    path = download(base(srv) + "/file", str(tmp_path), policy=LOOP, suffix=".mp4")
    try:
        assert path.endswith(".mp4") and os.path.dirname(path) == str(tmp_path)
        with open(path, "rb") as f:
            assert f.read() == FILE
    finally:
        os.unlink(path)
    assert srv.requests == [("/file", f"127.0.0.1:{srv.server_address[1]}")]


def test_default_dest_dir_is_the_temp_dir(srv):
    path = download(base(srv) + "/big", policy=LOOP)
    try:
        assert os.path.dirname(path) == tempfile.gettempdir()
        assert os.path.getsize(path) == len(BIG)
    finally:
        os.unlink(path)


def test_size_cap_from_content_length(srv, tmp_path):
    msg = refused(base(srv) + "/big", policy=DownloadPolicy(allow_http=True, allow_loopback=True, max_bytes=CAP),
                  dest_dir=str(tmp_path))
    assert "larger than the 1000 bytes download limit" in msg and "Content-Length: 4.9 KiB" in msg
    assert os.listdir(tmp_path) == []


def test_size_cap_while_streaming_without_content_length(srv, tmp_path):
    msg = refused(base(srv) + "/stream-big",
                  policy=DownloadPolicy(allow_http=True, allow_loopback=True, max_bytes=CAP), dest_dir=str(tmp_path))
    assert "larger than the 1000 bytes download limit; download aborted" in msg
    assert os.listdir(tmp_path) == []  # the partial file is gone


def test_exactly_at_the_cap_is_fine(srv, tmp_path):
    path = download(base(srv) + "/big", str(tmp_path),
                    policy=DownloadPolicy(allow_http=True, allow_loopback=True, max_bytes=len(BIG)))
    assert os.path.getsize(path) == len(BIG)


def test_redirect_chain_within_loopback(srv, tmp_path, caplog):
    caplog.set_level("INFO", logger="ltx_outpaint.download")
    path = download(base(srv) + "/chain/3?token=SECRET1", str(tmp_path), policy=LOOP)
    with open(path, "rb") as f:
        assert f.read() == FILE
    assert [p for p, _ in srv.requests] == ["/chain/3?token=SECRET1", "/chain/2", "/chain/1", "/chain/0",
                                            "/file?sig=SECRET2"]
    assert "redirect 4" in caplog.text and "/chain/3" in caplog.text
    assert "SECRET" not in caplog.text  # query strings are never logged


def test_too_many_redirects(srv, tmp_path):
    policy = DownloadPolicy(allow_http=True, allow_loopback=True, max_redirects=2)
    assert "too many redirects (more than 2)" in refused(base(srv) + "/loop", policy=policy, dest_dir=str(tmp_path))
    assert len(srv.requests) == 3 and os.listdir(tmp_path) == []
    assert "too many redirects" in refused(base(srv) + "/chain/3", policy=policy)


@pytest.mark.parametrize("path, reason", [
    ("/redirect-private", "10.0.0.1 is a private network address"),
    ("/redirect-metadata", "169.254.169.254 is a link-local address"),
    ("/redirect-ftp", "ftp:// URLs are not allowed"),
])
def test_redirect_to_forbidden_target_is_refused(srv, path, reason, tmp_path, loopback_only):
    msg = refused(base(srv) + path + "?k=SECRET", policy=LOOP, dest_dir=str(tmp_path))
    assert f"refused redirect from http://127.0.0.1:{srv.server_address[1]}{path} to " in msg
    assert reason in msg and "SECRET" not in msg
    assert len(srv.requests) == 1 and os.listdir(tmp_path) == []
    assert {a[0] for a in loopback_only} == {"127.0.0.1"}


def test_http_error_status(srv):
    msg = refused(base(srv) + "/missing?x=SECRET", policy=LOOP, field="input")
    assert msg.startswith("input: server answered HTTP 404 Not Found for http://127.0.0.1:")
    assert "SECRET" not in msg


def test_timeout(srv, tmp_path):
    policy = DownloadPolicy(allow_http=True, allow_loopback=True, timeout_s=0.2)
    msg = refused(base(srv) + "/slow", policy=policy, dest_dir=str(tmp_path))
    assert "timed out after 0.2 s" in msg and os.listdir(tmp_path) == []


def test_connection_refused_is_a_clear_error(loopback_only):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    msg = refused(f"http://127.0.0.1:{port}/x", policy=LOOP)
    assert msg.startswith(f"url: could not fetch http://127.0.0.1:{port}/x:")


def test_connects_to_the_vetted_ip_not_a_rebound_answer(srv, fake_dns):
    # First lookup (the check) says 127.0.0.1, any later one says 10.0.0.1: the request must go
    # to the pinned 127.0.0.1 (the guard fixture fails the test otherwise) with the original Host.
    fake_dns["files.test"] = ["127.0.0.1", "10.0.0.1"]
    path = download(base(srv, host="files.test") + "/echo-host", policy=LOOP)
    with open(path, "rb") as f:
        assert f.read() == f"files.test:{srv.server_address[1]}".encode()
    os.unlink(path)


# ---- https: pinned IP, but SNI and certificate checks use the real name ---------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if not shutil.which("openssl"):
        skip_or_fail("openssl CLI not available to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=files.test",
                    "-addext", "subjectAltName=DNS:files.test"], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv = _serve(ctx)
    ctx.sni_callback = lambda sock, name, c: srv.sni.append(name)
    srv.cert = cert
    yield srv
    _stop(srv)


def test_https_pins_ip_but_verifies_the_hostname(tls_server, fake_dns, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.cert)  # trust the test certificate
    fake_dns["files.test"] = ["127.0.0.1", "10.0.0.1"]
    fake_dns["other.test"] = ["127.0.0.1"]
    tls_server.requests.clear(), tls_server.sni.clear()
    policy = DownloadPolicy(allow_loopback=True)  # https only
    path = download(base(tls_server, "https", "files.test") + "/file", policy=policy)
    with open(path, "rb") as f:
        assert f.read() == FILE
    os.unlink(path)
    assert tls_server.sni == ["files.test"]
    assert tls_server.requests == [("/file", f"files.test:{tls_server.server_address[1]}")]
    # Same server, but the name does not match the certificate: refused by TLS verification.
    msg = refused(base(tls_server, "https", "other.test") + "/file", policy=policy)
    assert msg.startswith("url: could not fetch https://other.test:") and "certificate" in msg.lower()
    assert tls_server.requests == [("/file", f"files.test:{tls_server.server_address[1]}")]


def test_https_to_http_redirect_refused_unless_http_allowed(tls_server, fake_dns, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", tls_server.cert)
    fake_dns["files.test"] = ["127.0.0.1"]
    tls_server.requests.clear()
    msg = refused(base(tls_server, "https", "files.test") + "/redirect-http", policy=DownloadPolicy(allow_loopback=True))
    assert f"refused redirect from https://files.test:{tls_server.server_address[1]}/redirect-http to http://" in msg
    assert "http:// URLs are not allowed; use https://" in msg and len(tls_server.requests) == 1


def test_https_without_trusted_certificate_fails_clearly(tls_server, fake_dns, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    fake_dns["files.test"] = ["127.0.0.1"]
    msg = refused(base(tls_server, "https", "files.test") + "/file", policy=DownloadPolicy(allow_loopback=True))
    assert "CERTIFICATE_VERIFY_FAILED" in msg


# ---- helpers --------------------------------------------------------------------------------


def test_is_url():
    assert is_url("https://example.com/a.mp4") and is_url("  HTTP://x/y") and is_url("ftp://x")
    assert not is_url("/tmp/a.mp4") and not is_url("C:\\videos\\a.mp4") and not is_url("a.mp4") and not is_url("")


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), ("0", False),
                                             ("", False), ("no", False)])
def test_policy_from_env(monkeypatch, value, expected):
    monkeypatch.setenv("LTX_OUTPAINT_ALLOW_PRIVATE_HOSTS", value)
    p = policy_from_env()
    assert p.allow_private_hosts is expected and not p.allow_http and not p.allow_loopback
    assert p.max_bytes == 3 << 30 and p.timeout_s == 60 and p.max_redirects == 5
    assert policy_from_env(allow_private_hosts=False, max_bytes=10).allow_private_hosts is False
    monkeypatch.setenv("LTX_OUTPAINT_ALLOW_HTTP", value)
    assert policy_from_env().allow_http is expected


def test_policy_is_frozen_and_validated():
    with pytest.raises(Exception):
        DownloadPolicy().allow_http = True  # type: ignore[misc]
    with pytest.raises(ValueError):
        DownloadPolicy(max_bytes=0)
