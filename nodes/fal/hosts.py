"""Where fal requests go: base URLs, endpoint ids, and which hosts may receive the fal key.

The key goes only to fal's own https hosts (`*.fal.run`, `*.fal.ai`, `*.fal.media`) unless the person who
starts the server allows other bases through the environment:

- the base-URL variables themselves (`LTX_OUTPAINT_FAL_QUEUE_URL`, `_REST_URL`, `_CDN_URL`) are trusted;
- `LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS` = `1` (any http(s) host) or a comma list of `host[:port]` lets the
  pack's settings file (and its HTTP route) name other bases.

Precedence of each base URL, highest first: an explicit value (code, CLI) > environment > settings file >
fal's default.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping

import httpx

from ..errors import InputError

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"
DEFAULT_CDN_URL = "https://v3.fal.media"
ENV_QUEUE_URL = "LTX_OUTPAINT_FAL_QUEUE_URL"
ENV_REST_URL = "LTX_OUTPAINT_FAL_REST_URL"
ENV_CDN_URL = "LTX_OUTPAINT_FAL_CDN_URL"
ENV_ALLOW_CUSTOM_HOSTS = "LTX_OUTPAINT_FAL_ALLOW_CUSTOM_HOSTS"
ENV_URLS = {"queue": ENV_QUEUE_URL, "rest": ENV_REST_URL, "cdn": ENV_CDN_URL}
DEFAULTS = {"queue": DEFAULT_QUEUE_URL, "rest": DEFAULT_REST_URL, "cdn": DEFAULT_CDN_URL}
FAL_DOMAINS = ("fal.run", "fal.ai", "fal.media")
SETTINGS_NODE = "LTX Outpaint settings"  # where messages say a settings-file value comes from
NAMESPACES = ("workflows", "comfy")  # a first segment that comes before owner/alias
_TRUE = ("1", "true", "yes", "on", "*")
_FALSE = ("", "0", "false", "no", "off")


# ----------------------------------------------------------------------------------------------- hosts


def _parse(url: str) -> httpx.URL | None:
    try:
        u = httpx.URL(str(url).strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    return u if u.scheme in ("http", "https") and u.host else None


def is_fal_url(url: str) -> bool:
    """True for an https URL on one of fal's own domains (where the key may always go)."""
    u = _parse(url)
    if u is None or u.scheme != "https" or u.userinfo:
        return False
    host = u.host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in FAL_DOMAINS)


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, or None."""
    u = _parse(url)
    if u is None:
        return None
    return u.scheme, u.host.lower(), u.port or (443 if u.scheme == "https" else 80)


def host_label(url: str) -> str:
    """host[:port] of a URL, for messages (never the path or query, which may hold tokens)."""
    u = _parse(url)
    if u is None:
        return "an invalid URL"
    return u.host + (f":{u.port}" if u.port else "")


@dataclass(frozen=True)
class HostPolicy:
    """Which non-fal bases the settings file may name (set only from the server's environment)."""

    any_host: bool = False
    hosts: frozenset = frozenset()  # "host" or "host:port", lower case

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "HostPolicy":
        value = (os.environ if environ is None else environ).get(ENV_ALLOW_CUSTOM_HOSTS, "").strip()
        if value.lower() in _FALSE:
            return cls()
        if value.lower() in _TRUE:
            return cls(any_host=True)
        return cls(hosts=frozenset(h.strip().lower() for h in value.split(",") if h.strip()))

    def allows(self, url: str) -> bool:
        if is_fal_url(url):
            return True
        u = _parse(url)
        if u is None or u.userinfo:
            return False
        host = u.host.lower()
        return self.any_host or host in self.hosts or (u.port is not None and f"{host}:{u.port}" in self.hosts)

    def refusal(self, url: str) -> str:
        """Why `url` is refused (no path or query in the text)."""
        return (f"{host_label(url)} is not one of fal's hosts (https://*.fal.run, *.fal.ai, *.fal.media); the "
                f"fal key is only sent there unless whoever starts the server sets {ENV_ALLOW_CUSTOM_HOSTS}=1 "
                f"(or a list of host[:port]) or the {ENV_QUEUE_URL} / {ENV_REST_URL} / {ENV_CDN_URL} variables")


@dataclass(frozen=True)
class FalHosts:
    """Base URLs of fal's queue, REST (storage tokens) and CDN (uploads) services, without trailing '/'."""

    queue: str = DEFAULT_QUEUE_URL
    rest: str = DEFAULT_REST_URL
    cdn: str = DEFAULT_CDN_URL

    def __post_init__(self):
        for name in ("queue", "rest", "cdn"):
            value = str(getattr(self, name)).strip().rstrip("/")
            if not re.match(r"^https?://[^/]+", value) or _parse(value) is None:
                raise InputError(f"fal_{name}_url", f"must be an http(s) URL, got {value!r}")
            object.__setattr__(self, name, value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "FalHosts":
        """Defaults, overridden by env LTX_OUTPAINT_FAL_QUEUE_URL / _REST_URL / _CDN_URL when set."""
        env = os.environ if environ is None else environ
        return cls(**{name: env.get(var, "").strip() or DEFAULTS[name] for name, var in ENV_URLS.items()})

    def may_receive_key(self, url: str) -> bool:
        """The key may go to fal's own hosts and to the queue / REST bases this client was given."""
        return is_fal_url(url) or origin(url) is not None and origin(url) in (origin(self.queue), origin(self.rest))


def resolve_hosts(explicit: Mapping[str, str] | None = None, settings: Mapping[str, str] | None = None,
                  environ: Mapping[str, str] | None = None) -> FalHosts:
    """The base URLs to use: explicit > environment > settings file (if the policy allows) > default.

    `explicit` and `settings` map "queue" / "rest" / "cdn" to URLs ("" = unset). A settings value that the
    server's environment does not allow is refused with an InputError (nothing is sent anywhere).
    """
    env = os.environ if environ is None else environ
    policy = HostPolicy.from_env(env)
    chosen = {}
    for name, var in ENV_URLS.items():
        value = ((explicit or {}).get(name) or "").strip() or env.get(var, "").strip()
        if not value:
            value = ((settings or {}).get(name) or "").strip()
            if value and not policy.allows(value):
                raise InputError(f"fal_{name}_url", policy.refusal(value), node=SETTINGS_NODE)
        chosen[name] = value or DEFAULTS[name]
    return FalHosts(**chosen)


# ----------------------------------------------------------------------------------------------- endpoint ids


@dataclass(frozen=True)
class EndpointId:
    """A fal endpoint id split like fal's clients do: `[namespace/]owner/alias[/path]`."""

    owner: str
    alias: str
    path: str | None = None
    namespace: str | None = None

    @property
    def app(self) -> str:
        """`[namespace/]owner/alias`: the part the status, result and cancel URLs use."""
        return f"{self.namespace}/{self.owner}/{self.alias}" if self.namespace else f"{self.owner}/{self.alias}"

    def __str__(self) -> str:
        """The full id, where a submit goes."""
        return self.app + (f"/{self.path}" if self.path else "")


def split_endpoint_id(endpoint_id: str) -> EndpointId:
    """Split an endpoint id exactly as fal-client does (`123-my-app` is the legacy form of `123/my-app`)."""
    parts = str(endpoint_id).split("/")
    if len(parts) == 1:
        m = re.fullmatch(r"([0-9]+)-([a-zA-Z0-9-]+)", parts[0])
        if not m:
            raise ValueError(f"invalid fal endpoint id {endpoint_id!r}: expected owner/alias[/path]")
        parts = [m.group(1), m.group(2)]
    namespace = None
    if parts[0] in NAMESPACES:
        namespace, parts = parts[0], parts[1:]
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"invalid fal endpoint id {endpoint_id!r}: expected [namespace/]owner/alias[/path]")
    return EndpointId(parts[0], parts[1], "/".join(parts[2:]) or None, namespace)


def check_settings_hosts(values: Mapping[str, str], environ: Mapping[str, str] | None = None) -> None:
    """Raise ValueError when a `fal_*_url` setting names a host the server's environment does not allow."""
    policy = HostPolicy.from_env(environ)
    for name in ("fal_queue_url", "fal_rest_url", "fal_cdn_url"):
        url = values.get(name) or ""
        if url and not policy.allows(url):
            raise ValueError(f"{name}: {policy.refusal(url)}")
