"""The MCP servers a user declared, in the ``mcpServers`` JSON format that Claude Desktop, Cursor and oterm read:

    {"mcpServers": {"time": {"command": "mcp-server-time", "args": [], "env": {}},
                    "notes": {"url": "http://127.0.0.1:8000/mcp"}}}

``command``/``args``/``env`` start a server over stdio; ``url`` reaches one over streamable HTTP. The file is
``mcp.json`` in localllm's config folder, or the one ``--mcp-config`` names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from localllm.core.errors import UsageError
from localllm.core.settings import Settings

CONFIG_NAME = "mcp.json"
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ServerEntry:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    """The only variables the server gets, with PATH (the user's secrets stay out of it)."""
    url: str | None = None

    @property
    def where(self) -> str:
        return self.url or " ".join([self.command or "", *self.args]).strip()


def config_path(settings: Settings, override: Path | None = None) -> Path:
    return override if override is not None else settings.paths.config_dir / CONFIG_NAME


def read_servers(path: Path, *, required: bool = False) -> list[ServerEntry]:
    """The servers the file declares; none when it does not exist (unless ``required``: a file named on the
    command line must be there). A file that is not the expected shape is a UsageError saying where."""
    hint = 'see docs/tools.md; the shape is {"mcpServers": {"NAME": {"command": ..., "args": [...]}}}'
    if not path.exists():
        if required:
            raise UsageError(f"no MCP config file at {path}", hint="check the path given to --mcp-config")
        return []
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UsageError(f"{path} is over 1 MiB: not an MCP config file", hint=hint)
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", hint="check the file's permissions") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}", hint=hint) from None
    except RecursionError:  # json parses nested arrays and objects by recursion
        raise UsageError(f"{path}: its arrays or objects are nested too deeply to read", hint=hint) from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise UsageError(f'{path} has no "mcpServers" object', hint=hint)
    return [entry(path, name, value) for name, value in servers.items()]


def entry(path: Path, name: str, value: object) -> ServerEntry:
    where = f"{path}: server {name!r}"
    if not isinstance(value, dict):
        raise UsageError(f"{where} is not an object", hint='give it "command" (and "args", "env") or "url"')
    if not name or any(char in name for char in ". \t\n"):
        raise UsageError(f"{where}: a server's name cannot be empty or hold dots or spaces",
                         hint="tools are named SERVER.TOOL: rename the server")
    command, url = value.get("command"), value.get("url")
    if (command is None) == (url is None):
        raise UsageError(f'{where} needs either "command" (stdio) or "url" (streamable HTTP)',
                         hint='e.g. "command": "mcp-server-time"')
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise UsageError(f'{where}: "command" must be a program name or path', hint='e.g. "mcp-server-time"')
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise UsageError(f'{where}: "url" must start with http:// or https://',
                         hint='e.g. "http://127.0.0.1:8000/mcp"')
    args = value.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise UsageError(f'{where}: "args" must be a list of strings', hint='e.g. "args": ["--local-timezone=UTC"]')
    env = value.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise UsageError(f'{where}: "env" must map names to strings', hint='e.g. "env": {"API_KEY": "..."}')
    return ServerEntry(name, command, tuple(args), dict(env), url)
