"""Who may talk to `localllm serve` and `localllm web`: the Host and Origin rule both apply to every request.

Bound to loopback, the server answers only requests whose ``Host`` names this machine (localhost, 127.x, [::1],
host.docker.internal) or a host the user allowed: a page on another name whose DNS now points at 127.0.0.1 (DNS
rebinding) sends its own name, and is refused. Bound to another address, a key is required already (check_bind),
and the key is the gate; the Host is not checked there.

A request without an ``Origin`` (curl, the SDKs, a server) passes. A browser's ``Origin`` passes when it is a page on
this machine (http or https on localhost, 127.x, [::1] or an allowed host's full name, any port), the server's own
address, a desktop or editor app's scheme (APP_ORIGINS), or a pattern the user allowed (flags, config,
OLLAMA_ORIGINS; ``*`` matches any run of characters). ``Origin: null`` (sandboxed frames, some local files) passes
only when ``null`` itself was allowed.

The policy is plain data and functions, kept here in the core so that the settings can check an allow-list as they
read it; server/origins.py wraps it around an ASGI app (serve), and cli/web.py puts it in front of textual-serve's
aiohttp app."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

LOOPBACK_HOSTS = ("localhost", "host.docker.internal")
"""Host names that always reach this machine besides the loopback addresses; host.docker.internal is how a UI in a
container (Open WebUI and the like) reaches the host."""
APP_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
"""Origins of desktop apps (Electron and Tauri shells) and editor panels (VS Code's webviews): their pages run on the
user's machine, as the user's own programs."""
ORIGINS_VARIABLE = "OLLAMA_ORIGINS"
"""Ollama's variable for the same allow-list (comma separated): a user who set it for Ollama's clients gets it here."""
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]*")


@dataclass(frozen=True)
class AccessPolicy:
    check_host: bool = True
    """Whether the Host header is checked: the server is bound to loopback, where no key stands in front of it."""
    hosts: tuple[str, ...] = ()
    """Host names allowed besides loopback's (lower case, no port; ``*`` wildcards)."""
    origins: tuple[str, ...] = ()
    """Origin patterns allowed besides the defaults (lower case; ``*`` wildcards; ``null``)."""

    def host_allowed(self, host: str | None) -> bool:
        if not self.check_host or not host:
            return True  # no Host at all is no browser (every browser sends one)
        name = host_name(host)
        return is_loopback_name(name) or any(_glob(pattern).fullmatch(name) for pattern in self.hosts)

    def origin_allowed(self, origin: str | None, host: str | None = None) -> bool:
        if origin is None:
            return True
        text = origin.strip().lower()
        if text == "null":
            return "null" in self.origins
        if not _ORIGIN.fullmatch(text):
            return False
        if any(_glob(pattern).fullmatch(text) for pattern in self.origins if pattern != "null"):
            return True
        scheme, _, address = text.partition("://")
        if scheme in ("http", "https"):
            name = host_name(address)
            # An allowed host named in full is this machine by the user's word: its pages are as local as
            # localhost's (web's page opened by that name talks to its websocket at the bound address).
            if name != "host.docker.internal" and (is_loopback_name(name) or ("*" not in name and name in self.hosts)):
                return True
            # The server's own pages (web bound to a LAN address, opened by that address) send their own origin.
            if host and address == host.strip().lower():
                return True
        return any(_glob(pattern).fullmatch(text) for pattern in APP_ORIGINS)

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these headers is refused, for the client and the log; None: it may go on."""
        if not self.host_allowed(host):
            return (f"the Host {_shown(host)} is not a name of this machine (on loopback only its names are "
                    f"answered, so that a page on a DNS name rebound to it is not): --allow-host adds a name")
        if not self.origin_allowed(origin, host):
            return f"the Origin {_shown(origin)} is not allowed: --allow-origin (or OLLAMA_ORIGINS) adds one"
        return None


def host_name(host: str) -> str:
    """The name in a Host header (or an origin's address), lower case, without its port or a final dot:
    ``[::1]:8000`` is ``::1``, ``LocalHost.:80`` is ``localhost``."""
    text = host.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        text = text[1:end] if end > 0 else text
    elif text.count(":") == 1:
        text = text.split(":")[0]
    return text.rstrip(".")


def is_loopback_name(name: str) -> bool:
    if name in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_bind(address: str) -> bool:
    """Whether a listening address is reachable from this machine only (the case where the Host is checked)."""
    name = host_name(address) if address.startswith("[") else address.strip().lower()
    return name == "localhost" or (name != "host.docker.internal" and is_loopback_name(name))


def host_problem(value: str) -> str | None:
    """What is wrong with an allowed host name as given (None: nothing)."""
    text = value.strip()
    if not text:
        return "is empty"
    if any(ord(c) < 32 or c in " \x7f," for c in text):
        return "holds spaces, commas or control characters"
    if "/" in text:
        return "is an address; give the host name alone"
    return None


def origin_problem(value: str) -> str | None:
    """What is wrong with an allowed origin pattern as given (None: nothing)."""
    text = value.strip()
    if not text:
        return "is empty"
    if text in ("*", "null"):
        return None
    if any(ord(c) < 32 or c in " \x7f," for c in text):
        return "holds spaces, commas or control characters"
    if "://" not in text:
        return "has no scheme; an origin is SCHEME://HOST[:PORT]"
    if not _ORIGIN.fullmatch(normal_origin(text)):
        return "is not an origin; an origin is SCHEME://HOST[:PORT], without a path"
    return None


def normal_origin(value: str) -> str:
    """An allowed origin as matched: lower case, without the final slash a copied address often has."""
    text = value.strip().lower()
    return text[:-1] if text.endswith("/") and text.count("/") == 3 else text


def normal_host(value: str) -> str:
    return host_name(value) if "*" not in value else value.strip().lower()


def access_policy(bind: str, hosts: Iterable[str] = (), origins: Iterable[str] = (),
                  environ: Mapping[str, str] | None = None) -> AccessPolicy:
    """The policy for a server listening on ``bind``: the allowed hosts and origins given (flags and config, checked
    here with a message naming the flag) and the origins in OLLAMA_ORIGINS."""
    import os

    from localllm.core.errors import UsageError

    env = os.environ if environ is None else environ
    for value in hosts:
        problem = host_problem(value)
        if problem:
            raise UsageError(f"--allow-host {value!r} {problem}", hint="e.g. --allow-host mybox.lan")
    from_environment = [part for part in env.get(ORIGINS_VARIABLE, "").split(",") if part.strip()]
    for value in origins:
        problem = origin_problem(value)
        if problem:
            raise UsageError(f"--allow-origin {value!r} {problem}", hint="e.g. --allow-origin 'https://*.example.com'")
    for value in from_environment:
        problem = origin_problem(value)
        if problem:
            raise UsageError(f"environment variable {ORIGINS_VARIABLE}: {value.strip()!r} {problem}",
                             hint=f"{ORIGINS_VARIABLE}=https://app.example.com,app://*")
    return AccessPolicy(check_host=is_loopback_bind(bind),
                        hosts=tuple(dict.fromkeys(normal_host(h) for h in hosts)),
                        origins=tuple(dict.fromkeys(normal_origin(o) for o in [*origins, *from_environment])))


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE)


def _shown(value: str | None) -> str:
    text = "" if value is None else value
    return repr(text if len(text) <= 100 else text[:100] + "...")
