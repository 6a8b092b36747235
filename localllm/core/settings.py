"""Settings: one typed object, read once from the config file and the environment, then passed in.

Precedence: command-line flags (applied by the front end) > ``LOCALLLM_<FIELD>`` environment variables > the
config file (``<config_dir>/config.toml``) > the defaults below. ``LOCALLLM_HOME`` moves every path under one folder.
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from localllm.core.errors import ConfigError

APP_NAME = "localllm"
MAX_THREADS = 1024
MAX_BATCH = 65536
TUNED_SECTION = "tuned"
"""The config table `localllm bench --tune` writes: the threads and batch size it measured fastest here."""
SECRET_VARIABLES = ("OPENAI_API_KEY", "LOCALLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
INTEGER_EXAMPLES = {"ctx": 4096, "threads": 4, "gpu_headroom_mb": 512, "min_free_disk_mb": 1024}
# Settings that fall back on the environment variables the servers' own clients use.
STANDARD_VARIABLES = {"ollama_host": "OLLAMA_HOST", "base_url": "OPENAI_BASE_URL", "api_key": "OPENAI_API_KEY"}


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    """Downloaded models, conversations and manifests."""
    config_dir: Path
    """config.toml and prompt overrides."""
    cache_dir: Path
    """Caches that can be deleted at any time (GGUF metadata)."""

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        home = env.get("LOCALLLM_HOME")
        if home:
            root = Path(home).expanduser()
            return cls(data_dir=root / "data", config_dir=root / "config", cache_dir=root / "cache")
        import platformdirs

        return cls(
            data_dir=Path(platformdirs.user_data_dir(APP_NAME)),
            config_dir=Path(platformdirs.user_config_dir(APP_NAME)),
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME)),
        )


@dataclass(frozen=True)
class Tuned:
    """What `localllm bench --tune` measured fastest on this machine (the config's ``[tuned]`` table). A value left
    None is one where the default won: the planner keeps its own rule for it."""

    threads: int | None = None
    batch: int | None = None
    """Tokens llama.cpp evaluates per batch while reading a prompt (its n_batch)."""
    measured_at: str = ""
    """When, as an ISO 8601 UTC time."""
    model: str = ""
    """The model it was measured with."""

    def to_config(self) -> dict[str, Any]:
        values: dict[str, Any] = {"measured_at": self.measured_at, "model": self.model}
        values.update({key: value for key, value in (("threads", self.threads), ("batch", self.batch))
                       if value is not None})
        return values

    @property
    def when(self) -> str:
        """``2025-06-01 12:03 UTC``, or the stored text as it is where it is not an ISO 8601 time."""
        from datetime import UTC, datetime

        try:
            moment = datetime.fromisoformat(self.measured_at)
        except ValueError:
            return self.measured_at or "an unknown time"
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Settings:
    paths: Paths
    model: str = "smollm2-135m"
    """The model used when a command is given no -m."""
    backend: str = "auto"
    """auto, or a backend name such as llama.cpp."""
    preset: str = "balanced"
    """Decoding preset: precise (greedy), balanced or creative."""
    ctx: int = 8192
    """Default context window in tokens; the planner caps it by the model's trained context and free memory."""
    threads: int | None = None
    """CPU threads for generation; None: the physical cores not busy with other work when the model loads."""
    template: str = ""
    """A llama-cpp-python chat format (chatml, llama-3, gemma, ...) for models whose GGUF has no chat template;
    empty: the GGUF's own template, else the text is continued as by a base model."""
    gpu_headroom_mb: int = 512
    """GPU memory left free when the planner offloads layers."""
    model_dirs: tuple[str, ...] = field(default_factory=tuple)
    """Extra folders searched for .gguf files."""
    discover: bool = True
    """List and run models that Ollama, LM Studio, GPT4All and the Hugging Face cache already downloaded."""
    min_free_disk_mb: int = 1024
    """Disk space that must stay free after a download; `pull` refuses before the first byte otherwise."""
    ollama_host: str = ""
    """The Ollama server; empty means OLLAMA_HOST, else http://127.0.0.1:11434."""
    base_url: str = ""
    """An OpenAI-compatible server's /v1 URL; empty means OPENAI_BASE_URL, else the server profile's default."""
    api_key: str = field(default="", repr=False)
    """The OpenAI-compatible server's key; empty means OPENAI_API_KEY. Never printed or logged."""
    server: str = ""
    """The OpenAI-compatible server's profile (vllm, llamafile, llama-server, lmstudio, ...): default port, extras."""
    request_timeout: float = 120.0
    """Seconds a server may stay silent (before the first token, or between two) before the request fails."""
    keep_alive: str = ""
    """How long Ollama keeps the model loaded after a request (e.g. "5m", "-1" for ever); empty: Ollama's default."""
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    """Host names `serve` and `web` answer to on loopback besides localhost, 127.x, [::1] and host.docker.internal
    (`--allow-host` adds to them; LOCALLLM_ALLOWED_HOSTS is comma separated)."""
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    """Web page origins allowed to call `serve` and `web` besides this machine's pages and apps' schemes, ``*`` as a
    wildcard (`--allow-origin` and OLLAMA_ORIGINS add to them; LOCALLLM_ALLOWED_ORIGINS is comma separated)."""
    tuned: Tuned | None = None
    """Threads and batch size `localllm bench --tune` measured fastest here (the ``[tuned]`` table); the planner
    uses them where nothing more explicit (``threads``, LOCALLLM_THREADS, -o threads) is set."""

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        paths = Paths.from_environment(env)
        values: dict[str, Any] = {}
        config_file = paths.config_file
        if config_file.is_file():
            values.update(_read_config(config_file))
        for f in _setting_fields():
            raw = env.get(f"LOCALLLM_{f.name.upper()}")
            if raw:
                values[f.name] = _coerce(f.name, raw, f"environment variable LOCALLLM_{f.name.upper()}")
        # The variables the servers' own clients read come last: localllm's config and LOCALLLM_* win over them.
        for name, variable in STANDARD_VARIABLES.items():
            if not values.get(name) and env.get(variable):
                values[name] = _coerce(name, env[variable], f"environment variable {variable}")
        return cls(paths=paths, **values)

    def __post_init__(self) -> None:
        # Checked here, whichever of the config, the environment or --api-key gave it.
        if not sendable_key(self.api_key):
            raise ConfigError(f"the API key (api_key, {STANDARD_VARIABLES['api_key']} or --api-key) {UNSENDABLE_KEY}",
                              hint=KEY_HINT)

    def secrets(self, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """The keys localllm holds (its API key, a Hugging Face token): never to be printed, logged or stored."""
        env = os.environ if environ is None else environ
        found = [self.api_key, *(env.get(name, "") for name in SECRET_VARIABLES)]
        return tuple(dict.fromkeys(secret for secret in found if len(secret) >= 4))

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


MAX_REQUEST_TIMEOUT = 86_400
UNSENDABLE_KEY = "holds characters no HTTP client can send: accents, other non-ASCII letters or control characters"
KEY_HINT = "use ASCII letters, digits and punctuation, e.g. from: openssl rand -hex 16"


def sendable_key(key: str) -> bool:
    """HTTP clients send headers in ASCII: a key with other characters could never be sent (or be checked)."""
    return key.isascii() and key.isprintable()


def _setting_fields():
    """The settings a key or a LOCALLLM_* variable sets (``tuned`` is a table of its own, written by bench --tune)."""
    return [f for f in fields(Settings) if f.name not in ("paths", "tuned")]


def _coerce(name: str, value: Any, where: str) -> Any:
    default = next(f for f in _setting_fields() if f.name == name).default
    if name == "model_dirs":
        if isinstance(value, str):
            value = [part for part in value.split(os.pathsep) if part]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: model_dirs must be a list of folder paths", hint='model_dirs = ["~/models"]')
        return tuple(value)
    if name in ("allowed_hosts", "allowed_origins"):
        return _allow_list(name, value, where)
    if name == "discover":
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: discover must be true or false, got {value!r}", hint="discover = false")
        return value
    if name in ("ctx", "threads", "gpu_headroom_mb", "min_free_disk_mb"):
        example = INTEGER_EXAMPLES[name]
        # TOML gives int, float or bool; the environment gives text. Only whole numbers are taken: 3.7 or true
        # would otherwise become 3 or 1 without a word.
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be a whole number, got {value!r}", hint=f"{name} = {example}")
        number = value
        if number < 0 or (number == 0 and name in ("ctx", "threads")):
            raise ConfigError(f"{where}: {name} must be positive, got {number}", hint=f"{name} = {example}")
        if name == "threads" and number > MAX_THREADS:
            raise ConfigError(f"{where}: threads = {number} is more than {MAX_THREADS}",
                              hint="threads = 4 (or remove it: localllm chooses from the cores that are free)")
        return number
    if name == "request_timeout":
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: request_timeout must be a number of seconds, got {value!r}",
                              hint="request_timeout = 120") from None
        if not 0 < seconds <= MAX_REQUEST_TIMEOUT:  # inf and nan too: the clients' clocks overflow on them
            raise ConfigError(f"{where}: request_timeout must be above zero and at most {MAX_REQUEST_TIMEOUT:,} "
                              f"seconds (a day), got {value!r}", hint="request_timeout = 120")
        return seconds
    if not isinstance(value, str):
        shown = "a secret" if name == "api_key" else repr(value)
        raise ConfigError(f"{where}: {name} must be a string, got {shown}", hint=f'{name} = "{default}"')
    if name in SERVER_URL_EXAMPLES and value:
        problem = server_url_problem(value)
        if problem:
            raise ConfigError(f"{where}: {name} {value!r} {problem}", hint=f'{name} = "{SERVER_URL_EXAMPLES[name]}"')
    return value


def _allow_list(name: str, value: Any, where: str) -> tuple[str, ...]:
    from localllm.core.access import host_problem, normal_host, normal_origin, origin_problem

    example = '["mybox.lan"]' if name == "allowed_hosts" else '["https://*.example.com"]'
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {name} must be a list of strings", hint=f"{name} = {example}")
    problem_of, normal = (host_problem, normal_host) if name == "allowed_hosts" else (origin_problem, normal_origin)
    for item in value:
        problem = problem_of(item)
        if problem:
            raise ConfigError(f"{where}: {name} entry {item!r} {problem}", hint=f"{name} = {example}")
    return tuple(normal(item) for item in value)


SERVER_URL_EXAMPLES = {"ollama_host": "http://127.0.0.1:11434", "base_url": "http://127.0.0.1:8000/v1"}


def server_url_problem(value: str) -> str | None:
    """What is wrong with a server address (None: nothing), checked before any client library parses it: they
    raise bare ValueErrors for a port out of range or a broken IPv6 bracket. A missing scheme is allowed, as
    Ollama's OLLAMA_HOST allows (``localhost:11434``)."""
    from urllib.parse import urlsplit

    text = value.strip()
    if any(ord(c) < 32 or c in " \x7f" for c in text):
        return "holds spaces or control characters"
    try:
        parts = urlsplit(text if "://" in text else f"http://{text}")
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Invalid IPv6 URL", "Port could not be cast ..."
        return f"is not a valid address ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"has the scheme {parts.scheme!r}; only http and https are served"
    if not parts.hostname:
        return "has no host name"
    if port == 0:
        return "has port 0"
    return None


_KEY_FILES_POINTED_OUT: set[Path] = set()
APP_SECTIONS = {"tui", "keys"}
"""Config tables the app reads for itself (localllm/tui/preferences.py); not settings."""


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message already names the line and column, e.g. "Expected '=' ... (at line 3, column 7)".
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax, or move the file away to use defaults") from None
    except RecursionError:  # tomllib parses nested arrays and tables by recursion
        raise ConfigError(f"{path}: its arrays or tables are nested too deeply to read",
                          hint="no setting nests more than two levels; fix the file or move it away") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})",
                          hint="check its permissions and encoding") from None
    if data.get("api_key") and os.name == "posix" and path not in _KEY_FILES_POINTED_OUT:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            _KEY_FILES_POINTED_OUT.add(path)  # once: a command can read the config more than once
            logging.getLogger("localllm").warning(
                f"note: {path} holds an API key and other users can read it (mode {mode:04o}): chmod 600 {path}")
    known = {f.name for f in _setting_fields()}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in APP_SECTIONS:
            continue
        if key == TUNED_SECTION:
            values["tuned"] = _tuned(value, path)
            continue
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"
            raise ConfigError(f"{path}: unknown setting {key!r}", hint=hint)
        values[key] = _coerce(key, value, str(path))
    return values


def _tuned(table: Any, path: Path) -> Tuned:
    """The ``[tuned]`` table, checked as strictly as the other settings."""
    hint = f"run `localllm bench --tune` again, or delete the [{TUNED_SECTION}] table"
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {TUNED_SECTION} must be a table", hint=hint)
    known = {f.name for f in fields(Tuned)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}: [{TUNED_SECTION}] {key}"
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r} in [{TUNED_SECTION}]",
                              hint=f"known keys: {', '.join(sorted(known))}")
        if key in ("threads", "batch"):
            limit = MAX_THREADS if key == "threads" else MAX_BATCH
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
                raise ConfigError(f"{where} must be a whole number from 1 to {limit}, got {value!r}", hint=hint)
        elif not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}", hint=hint)
        values[key] = value
    return Tuned(**values)


def save_tuned(config_file: Path, tuned: Tuned, comment: Sequence[str] = ()) -> None:
    """Write ``tuned`` as the config's ``[tuned]`` table, ``comment`` lines at its top (when and what was measured),
    in place of any earlier one; the rest of the file keeps its keys, comments and layout (tomlkit). A file that holds
    an API key stays readable by the user alone."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    from localllm.core.files import write_text_atomically

    try:
        text = config_file.read_text(encoding="utf-8") if config_file.exists() else ""
        document = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError, TOMLKitError) as exc:
        raise ConfigError(f"{config_file}: cannot read the config file to add the tuned settings ({exc})",
                          hint="fix it, or move it away, and tune again") from None
    table = tomlkit.table()
    for line in comment:
        table.add(tomlkit.comment(line))
    for key, value in tuned.to_config().items():
        table.add(key, value)
    if TUNED_SECTION in document:
        document[TUNED_SECTION] = table
    else:
        document.add(TUNED_SECTION, table)
    # A file that holds a key stays readable by the user alone, whatever mode it had.
    write_text_atomically(config_file, tomlkit.dumps(document), private="api_key" in document)
