"""The Hugging Face Hub, through huggingface-hub for what it does well: file metadata (size, LFS sha256, the
commit), URLs, tokens (HF_TOKEN or `hf auth login`), HF_ENDPOINT, HF_HUB_OFFLINE and its error types.

The transfer itself is localllm's own (store/transfer.py): huggingface-hub 1.x and later delete a partial
download on failure and cannot resume it across runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from localllm.core.errors import LocalLLMError

HUB_SCHEME = "hf://"


class HubError(LocalLLMError):
    """The Hub refused or could not answer: not found, gated, unauthorised, offline."""


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
    if len(parts) < 3 or not all(parts) or not parts[-1].endswith(".gguf"):
        raise HubError(f"{uri!r} is not hf://OWNER/REPO/FILE.gguf",
                       hint="for example hf://bartowski/Qwen2.5-0.5B-Instruct-GGUF/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or "main"


def auth_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    from localllm import __version__

    return build_hf_headers(library_name="localllm", library_version=__version__)


def file_info(repo: str, path: str, revision: str = "main", *, timeout: float = 120.0) -> HubFile:
    """Size, sha256 and commit of one file, asked of the Hub before any byte is downloaded; a Hub that accepts
    the connection and never answers is given up on after ``timeout`` seconds."""
    import concurrent.futures
    import threading

    result: concurrent.futures.Future = concurrent.futures.Future()

    def ask() -> None:
        try:
            result.set_result(_file_info(repo, path, revision))
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
    from huggingface_hub import errors as hub_errors

    api = HfApi(endpoint=endpoint())
    try:
        infos = api.get_paths_info(repo, [path], revision=revision, expand=False)
        commit = _resolve_commit(api, repo, revision)
    except hub_errors.GatedRepoError:
        raise HubError(f"{repo} is a gated repository: accept its licence on the Hub first",
                       hint=f"visit {endpoint()}/{repo}, then log in with `hf auth login` or set HF_TOKEN") from None
    except hub_errors.RevisionNotFoundError:
        raise HubError(f"{repo} has no revision {revision!r}", hint="check the branch, tag or commit") from None
    except hub_errors.RepositoryNotFoundError:
        raise HubError(f"repository {repo} was not found (or it is private)",
                       hint="check the name; for a private repository log in with `hf auth login` or set HF_TOKEN"
                       ) from None
    except hub_errors.OfflineModeIsEnabled:
        raise HubError("HF_HUB_OFFLINE is set, so nothing can be downloaded", hint="unset HF_HUB_OFFLINE") from None
    except hub_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubError(f"the Hub answered {status} for {repo}/{path}", hint="try again later") from None
    except Exception as exc:  # connection refused, DNS, TLS: huggingface-hub lets httpx2's errors through
        raise HubError(f"cannot reach the Hub at {endpoint()} ({type(exc).__name__})",
                       hint="check the network connection, or HF_ENDPOINT") from None
    from huggingface_hub.hf_api import RepoFile

    files = [info for info in infos if isinstance(info, RepoFile) and info.path == path]
    if not files:
        raise HubError(f"{repo} has no file {path!r} at {revision}", hint=f"see the file list at {endpoint()}/{repo}")
    found = files[0]
    sha256 = found.lfs.sha256 if found.lfs is not None else None
    url = hf_hub_url(repo, path, revision=commit or revision, endpoint=endpoint())
    return HubFile(repo=repo, path=path, revision=commit or revision, size=int(found.size), sha256=sha256, url=url)


def _resolve_commit(api, repo: str, revision: str) -> str | None:
    """Pin the download to a commit, so a branch moving half-way cannot mix two versions of a file."""
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    info = api.model_info(repo, revision=revision)
    return getattr(info, "sha", None)
