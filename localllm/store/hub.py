"""The Hugging Face Hub, through huggingface-hub for what it does well: file metadata (size, LFS sha256, the
commit), URLs, tokens (HF_TOKEN or `hf auth login`), HF_ENDPOINT, HF_HUB_OFFLINE and its error types.

The transfer itself is localllm's own (store/transfer.py): huggingface-hub 1.x and later delete a partial
download on failure and cannot resume it across runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from localllm.core.errors import LocalLLMError, UsageError

HUB_SCHEME = "hf://"
T = TypeVar("T")


class HubError(LocalLLMError):
    """The Hub refused or could not answer: not found, gated, unauthorised, offline."""


class HubNotFound(HubError):
    """The Hub has no such repository, revision or file."""


class HubSpecError(HubError, UsageError):
    """A name of something on the Hub that is not well formed."""


@dataclass(frozen=True)
class HubFile:
    repo: str
    path: str
    revision: str
    """The commit the file was resolved at."""
    size: int
    sha256: str | None
    url: str


def endpoint() -> str:
    # Read at call time: huggingface-hub reads HF_ENDPOINT once, at import.
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def parse_hf_uri(uri: str) -> tuple[str, str, str]:
    """``hf://OWNER/REPO/PATH.gguf[@REVISION]`` → (repo, path, revision)."""
    body = uri[len(HUB_SCHEME):]
    body, _, revision = body.partition("@")
    parts = body.split("/")
    # The owner and repository as the Hub spells them, and no "." or ".." anywhere: a client of `serve` sends these
    if len(parts) < 3 or not all(parts) or not parts[-1].endswith(".gguf") \
            or not all(_REPO_PART.fullmatch(part) for part in parts[:2]) or any(part in (".", "..") for part in parts):
        raise HubSpecError(f"{uri!r} is not hf://OWNER/REPO/FILE.gguf",
                       hint="for example hf://bartowski/Qwen2.5-0.5B-Instruct-GGUF/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or "main"


HF_CO_PREFIXES = ("hf.co/", "huggingface.co/")
"""Ollama's names for a GGUF repository on the Hub: ``hf.co/OWNER/REPO[:QUANT]``."""
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
DEFAULT_QUANT = "Q4_K_M"
"""The quant an ``hf.co/OWNER/REPO`` name without one means, where the repository has it (as Ollama does)."""


def is_hf_co(spec: str) -> bool:
    return spec.lower().startswith(HF_CO_PREFIXES)


def parse_hf_co(spec: str) -> tuple[str, str | None]:
    """``hf.co/OWNER/REPO[:QUANT]`` → (OWNER/REPO, QUANT or None); ``latest`` is no quant."""
    body = spec[spec.index("/") + 1:]
    body, _, quant = body.partition(":")
    parts = body.split("/")
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(part) and ".." not in part for part in parts):
        raise HubSpecError(f"{spec!r} is not hf.co/OWNER/REPO[:QUANT]",
                       hint="for example hf.co/bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M")
    if quant and not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", quant):
        raise HubSpecError(f"{quant!r} is not a quant name", hint="for example :Q4_K_M or :q8_0")
    return "/".join(parts), (None if not quant or quant.lower() == "latest" else quant)


def quant_file(repo: str, files: list[str], quant: str | None) -> str:
    """The GGUF of ``repo`` whose name ends in ``quant`` (case aside); without a quant, Q4_K_M where there is one,
    else the repository's only GGUF. Multimodal projectors and split files are not models to pull on their own."""
    ggufs = sorted(name for name in files if name.lower().endswith(".gguf") and "mmproj" not in name.lower()
                   and not re.search(r"-\d{5}-of-\d{5}\.gguf$", name.lower()))
    if not ggufs:
        raise HubNotFound(f"{repo} has no GGUF file to pull", hint=f"see the files at {endpoint()}/{repo}")

    def of(wanted: str) -> list[str]:
        return [name for name in ggufs if re.search(rf"[-._]{re.escape(wanted.lower())}\.gguf$", name.lower())]

    if quant:
        found = of(quant)
    else:
        found = of(DEFAULT_QUANT) or (ggufs if len(ggufs) == 1 else [])
    if not found:
        quants = sorted({re.sub(r"^.*?[-._]((?:i?q|f|bf)\d[\w]*)\.gguf$", r"\1", name, flags=re.IGNORECASE)
                         for name in ggufs})
        asked = f"no {quant} file" if quant else f"several GGUF files and no {DEFAULT_QUANT}"
        raise HubNotFound(f"{repo} has {asked}", hint=f"name one: hf.co/{repo}:{quants[0]} (its files: "
                       f"{', '.join(ggufs[:8])}{' ...' if len(ggufs) > 8 else ''})")
    return min(found, key=len)


def repo_files(repo: str, revision: str = "main", *, timeout: float = 120.0) -> list[str]:
    """The files of ``repo`` at ``revision``, asked of the Hub (within ``timeout`` seconds)."""
    return _in_time(lambda: _repo_files(repo, revision), timeout)


def _repo_files(repo: str, revision: str) -> list[str]:
    if offline():
        raise HubError("HF_HUB_OFFLINE is set, so nothing can be downloaded", hint="unset HF_HUB_OFFLINE")
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision)
    except Exception as exc:  # noqa: BLE001 - each of the Hub's refusals is said as _file_info says it
        raise _hub_error(exc, repo, revision) from None
    return [sibling.rfilename for sibling in info.siblings or []]


def auth_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    from localllm import __version__

    return build_hf_headers(library_name="localllm", library_version=__version__)


def file_info(repo: str, path: str, revision: str = "main", *, timeout: float = 120.0) -> HubFile:
    """Size, sha256 and commit of one file, asked of the Hub before any byte is downloaded; a Hub that accepts
    the connection and never answers is given up on after ``timeout`` seconds."""
    return _in_time(lambda: _file_info(repo, path, revision), timeout)


def _in_time(work: Callable[[], T], timeout: float) -> T:
    import concurrent.futures
    import threading

    result: concurrent.futures.Future = concurrent.futures.Future()

    def ask() -> None:
        try:
            result.set_result(work())
        except BaseException as exc:  # delivered to the waiting side
            result.set_exception(exc)

    # huggingface-hub's HTTP client waits without a time limit; a daemon thread, so that a Hub that never
    # answers does not hold the process open at exit.
    threading.Thread(target=ask, name="hub metadata", daemon=True).start()
    try:
        return result.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise HubError(f"the Hub at {endpoint()} did not answer within {timeout:g} s",
                       hint="check the network connection or HF_ENDPOINT; --timeout SECONDS waits longer") from None


def _file_info(repo: str, path: str, revision: str) -> HubFile:
    if offline():
        raise HubError("HF_HUB_OFFLINE is set, so nothing can be downloaded",
                       hint="unset HF_HUB_OFFLINE, or use a model that is already installed (`localllm list`)")
    from huggingface_hub import HfApi, hf_hub_url

    api = HfApi(endpoint=endpoint())
    try:
        infos = api.get_paths_info(repo, [path], revision=revision, expand=False)
        commit = _resolve_commit(api, repo, revision)
    except Exception as exc:  # noqa: BLE001 - each refusal of the Hub's is said in words (_hub_error)
        raise _hub_error(exc, repo, revision, f"{repo}/{path}") from None
    from huggingface_hub.hf_api import RepoFile

    files = [info for info in infos if isinstance(info, RepoFile) and info.path == path]
    if not files:
        raise HubNotFound(f"{repo} has no file {path!r} at {revision}",
                          hint=f"see the file list at {endpoint()}/{repo}")
    found = files[0]
    sha256 = found.lfs.sha256 if found.lfs is not None else None
    url = hf_hub_url(repo, path, revision=commit or revision, endpoint=endpoint())
    return HubFile(repo=repo, path=path, revision=commit or revision, size=int(found.size), sha256=sha256, url=url)


def _hub_error(exc: Exception, repo: str, revision: str = "main", what: str = "") -> HubError:
    """What the Hub's refusal (or a failure to reach it) means, in words."""
    from huggingface_hub import errors as hub_errors

    if isinstance(exc, hub_errors.GatedRepoError):
        return HubError(f"{repo} is a gated repository: accept its licence on the Hub first",
                        hint=f"visit {endpoint()}/{repo}, then log in with `hf auth login` or set HF_TOKEN")
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return HubNotFound(f"{repo} has no revision {revision!r}", hint="check the branch, tag or commit")
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return HubNotFound(f"repository {repo} was not found (or it is private)",
                        hint="check the name; for a private repository log in with `hf auth login` or set HF_TOKEN")
    if isinstance(exc, hub_errors.OfflineModeIsEnabled):
        return HubError("HF_HUB_OFFLINE is set, so nothing can be downloaded", hint="unset HF_HUB_OFFLINE")
    if isinstance(exc, hub_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return HubError(f"the Hub answered {status} for {what or repo}", hint="try again later")
    # connection refused, DNS, TLS: huggingface-hub lets httpx2's errors through
    return HubError(f"cannot reach the Hub at {endpoint()} ({type(exc).__name__})",
                    hint="check the network connection, or HF_ENDPOINT")


def _resolve_commit(api, repo: str, revision: str) -> str | None:
    """Pin the download to a commit, so a branch moving half-way cannot mix two versions of a file."""
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    info = api.model_info(repo, revision=revision)
    return getattr(info, "sha", None)
