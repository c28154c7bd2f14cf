"""SSRF-safe downloader shared by every URL input (videos, LoRA files).

Each hop (the URL and every redirect) is vetted before any connection: the scheme must be
allowed, the host is resolved with ``socket.getaddrinfo`` and *every* address must be allowed
by the policy. The connection then goes to the vetted IP (pinned, so a DNS answer that changes
between check and use cannot redirect it), with the original ``Host`` header and, for https,
the original name as TLS SNI / certificate hostname. Bodies are streamed to a temporary file
under a size cap; the file is deleted on any failure.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import tempfile
from dataclasses import dataclass

import httpx

from .errors import InputError

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO, query string included (signed URLs carry tokens there); ComfyUI
# logs at INFO, so keep httpx's own request lines out of its console. Ours are redacted.
logging.getLogger("httpx").setLevel(logging.WARNING)

ENV_ALLOW_PRIVATE = "LTX_OUTPAINT_ALLOW_PRIVATE_HOSTS"
ENV_ALLOW_HTTP = "LTX_OUTPAINT_ALLOW_HTTP"
CHUNK_BYTES = 1 << 20
_USER_AGENT = "comfyui-ltx-outpaint"

_PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in
                      ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DownloadError(InputError):
    """A URL was refused or could not be fetched."""


@dataclass(frozen=True)
class DownloadPolicy:
    """What `download` may fetch. Link-local, multicast, unspecified and reserved addresses are
    always refused; private ranges and loopback only with the opt-ins below."""

    allow_http: bool = False           # plain http:// (https only by default)
    allow_private_hosts: bool = False  # LAN servers: 10/8, 172.16/12, 192.168/16, fc00::/7 and loopback
    allow_loopback: bool = False       # loopback only (narrower; used by tests)
    max_bytes: int = 3 << 30
    timeout_s: float = 60.0            # connect / read / write timeout, not a total deadline
    max_redirects: int = 5

    def __post_init__(self):
        if self.max_bytes <= 0 or self.timeout_s <= 0 or self.max_redirects < 0:
            raise ValueError(f"invalid DownloadPolicy: {self}")


def policy_from_env(**overrides) -> DownloadPolicy:
    """Default policy with the user's opt-ins: $LTX_OUTPAINT_ALLOW_PRIVATE_HOSTS (a LAN file server) and
    $LTX_OUTPAINT_ALLOW_HTTP (plain http://), each 1/true/yes."""

    def flag(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")

    return DownloadPolicy(**{"allow_private_hosts": flag(ENV_ALLOW_PRIVATE), "allow_http": flag(ENV_ALLOW_HTTP),
                             **overrides})


def is_url(s: str) -> bool:
    """True if `s` starts with a URL scheme (``scheme://``) rather than being a file path."""
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s.strip()))


def redact(url: httpx.URL | str) -> str:
    """scheme://host[:port]/path, without user info, query or fragment (they may hold tokens)."""
    try:
        u = httpx.URL(url) if isinstance(url, str) else url
        return f"{u.scheme}://{u.netloc.decode('ascii', 'replace')}{u.path}"
    except Exception:
        return "<unparseable URL>"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    exp = min(3, (n.bit_length() - 1) // 10)
    return f"{n / (1 << 10 * exp):.1f} {('KiB', 'MiB', 'GiB')[exp - 1]}"


def _parse(url: str | httpx.URL, policy: DownloadPolicy, field: str, via: str = "") -> httpx.URL:
    """Parse and check scheme, user info and host (no network). `via`: the redirecting URL."""
    try:
        u = httpx.URL(url.strip() if isinstance(url, str) else url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise DownloadError(field, f"not a valid URL ({exc})") from None
    what = f"redirect from {via} to {redact(u)}" if via else redact(u)
    allowed = ("https", "http") if policy.allow_http else ("https",)
    if u.scheme not in allowed:
        raise DownloadError(field, f"refused {what}: {u.scheme or '(no scheme)'}:// URLs are not allowed; "
                                   f"use {' or '.join(s + '://' for s in allowed)}")
    if u.userinfo:
        raise DownloadError(field, f"refused {what}: URLs with a user name or password before the host "
                                   f"are not allowed; remove the 'user@' part")
    if not u.raw_host:
        raise DownloadError(field, f"refused {what}: the URL has no host")
    if not _valid_host(u.raw_host.decode("ascii", "replace")) or not (u.port is None or 0 < u.port < 65536):
        raise DownloadError(field, f"refused {what}: invalid host or port")
    return u


def _valid_host(host: str) -> bool:
    if ":" in host:  # IPv6 literal (httpx strips the brackets); zone ids are refused
        try:
            return "%" not in host and bool(ipaddress.IPv6Address(host))
        except ValueError:
            return False
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", host))


def _refusal(ip: IPAddress, policy: DownloadPolicy) -> str | None:
    """Why `ip` may not be contacted under `policy`, or None if it may."""
    if ip.version == 6:  # judge IPv4 addresses embedded in IPv6 forms by their IPv4 value
        embedded = ip.ipv4_mapped or ip.sixtofour or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            ip = embedded
    if ip.is_link_local:
        return "a link-local address (169.254.0.0/16, fe80::/10: cloud metadata services); never allowed"
    for kind in ("multicast", "unspecified"):
        if getattr(ip, f"is_{kind}"):
            return f"a {kind} address; never allowed"
    hint = f"set {ENV_ALLOW_PRIVATE}=1 to allow downloads from your own machine or LAN"
    if ip.is_loopback:  # before `reserved`: ::1 lies in the reserved ::/8
        return None if policy.allow_loopback or policy.allow_private_hosts else \
            f"a loopback address (this machine); {hint}"
    if any(ip in net for net in _PRIVATE_NETS):
        return None if policy.allow_private_hosts else f"a private network address; {hint}"
    if ip.is_reserved:
        return "a reserved address; never allowed"
    if not ip.is_global:
        return "not a public internet address; never allowed"
    return None


def _vet_host(u: httpx.URL, policy: DownloadPolicy, field: str, via: str = "") -> str:
    """Resolve the host, refuse if any address is disallowed, return the IP to connect to."""
    host = u.raw_host.decode("ascii")
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadError(field, f"cannot resolve host {host!r} ({exc}); check the URL") from None
    addresses = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise DownloadError(field, f"host {host!r} resolved to no addresses")
    for ip in addresses:
        reason = _refusal(ip, policy)
        if reason:
            shown = host if host == str(ip) else f"{host} (resolves to {ip})"
            what = f"redirect from {via} to {redact(u)}" if via else redact(u)
            raise DownloadError(field, f"refused {what}: {shown} is {reason}")
    return str(addresses[0])


def _stream_to_file(response: httpx.Response, u: httpx.URL, policy: DownloadPolicy, field: str,
                    dest_dir: str | None, suffix: str) -> str:
    too_big = f"{redact(u)} is larger than the {_size(policy.max_bytes)} download limit"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise DownloadError(field, f"{too_big} (Content-Length: {_size(int(declared))})")
    fd, path = tempfile.mkstemp(prefix="ltx_outpaint_dl_", suffix=suffix, dir=dest_dir)
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                written += len(chunk)
                if written > policy.max_bytes:
                    raise DownloadError(field, f"{too_big}; download aborted")
                f.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    log.info("downloaded %s (%s) to %s", redact(u), _size(written), path)
    return path


def download(url: str, dest_dir: str | None = None, *, policy: DownloadPolicy = DownloadPolicy(),
             field: str = "url", suffix: str = "") -> str:
    """Fetch `url` to a new temporary file in `dest_dir` (system temp dir if None) and return its
    path; the caller deletes it. Raises `DownloadError` (an `InputError` naming `field`)."""
    current = _parse(url, policy, field)
    ip = _vet_host(current, policy, field)
    ssl_context = httpx.create_ssl_context(trust_env=True)  # honours SSL_CERT_FILE / SSL_CERT_DIR
    timeout = httpx.Timeout(policy.timeout_s)
    log.info("downloading %s", redact(current))
    try:
        for hop in range(policy.max_redirects + 1):
            headers = {"Host": current.netloc.decode("ascii"), "Accept-Encoding": "identity",
                       "User-Agent": _USER_AGENT}
            extensions = {"sni_hostname": current.raw_host.decode("ascii")} if current.scheme == "https" else {}
            # A fresh client per hop: no connection reuse across hosts, no env proxies / .netrc.
            transport = httpx.HTTPTransport(verify=ssl_context, retries=0)
            with httpx.Client(transport=transport, timeout=timeout, trust_env=False,
                              follow_redirects=False) as client, \
                    client.stream("GET", current.copy_with(host=ip), headers=headers,
                                  extensions=extensions) as response:
                if not response.is_redirect:
                    if not response.is_success:
                        raise DownloadError(field, f"server answered HTTP {response.status_code} "
                                                   f"{response.reason_phrase} for {redact(current)}")
                    return _stream_to_file(response, current, policy, field, dest_dir, suffix)
                target = current.join(response.headers["location"])
                log.info("redirect %d (HTTP %d): %s -> %s", hop + 1, response.status_code,
                         redact(current), redact(target))
            if hop == policy.max_redirects:
                break
            via = redact(current)
            current = _parse(target, policy, field, via)
            ip = _vet_host(current, policy, field, via)
        raise DownloadError(field, f"too many redirects (more than {policy.max_redirects}) "
                                   f"starting at {redact(url)}")
    except httpx.TimeoutException:
        raise DownloadError(field, f"timed out after {policy.timeout_s:g} s waiting for "
                                   f"{redact(current)}; check the URL or try again") from None
    except httpx.InvalidURL as exc:
        raise DownloadError(field, f"invalid redirect URL from {redact(current)} ({exc})") from None
    except httpx.HTTPError as exc:
        raise DownloadError(field, f"could not fetch {redact(current)}: {exc}") from None
