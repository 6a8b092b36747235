"""models.toml: the models localllm knows by name, with their quantised files and where to get them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localllm.core.model import ModelInfo

from localllm.core.errors import ConfigError

USES = ("chat", "code", "summarize")


@dataclass(frozen=True)
class CatalogQuant:
    quant: str
    file: str
    size: int
    repo: str | None = None
    """Hugging Face repository that serves ``file``."""
    package: str | None = None
    """Python package whose folder ships ``file``; such a model needs no download."""
    approximate: bool = False
    """The size is rounded (as a model card shows it); `pull` takes the exact size from the Hub."""


@dataclass(frozen=True)
class Architecture:
    """The shape numbers from the model's config.json, enough for the planner to judge a quant before download."""

    layers: int
    embedding: int
    heads: int
    kv_heads: int
    feed_forward: int
    vocab: int
    head_dim: int | None = None
    tied_embeddings: bool = False


@dataclass(frozen=True)
class CatalogModel:
    name: str
    title: str
    family: str
    uses: tuple[str, ...]
    parameters: float
    """Billions of parameters."""
    licence: str
    context_length: int
    quants: tuple[CatalogQuant, ...]
    arch: Architecture | None = None

    def quant(self, name: str) -> CatalogQuant | None:
        return next((q for q in self.quants if q.quant.lower() == name.lower()), None)


def default_catalog_path() -> Path:
    package_dir = Path(__file__).resolve().parent.parent
    # In a wheel models.toml sits inside the package; in a source checkout it is at the top level.
    for candidate in (package_dir / "models.toml", package_dir.parent / "models.toml"):
        if candidate.is_file():
            return candidate
    raise ConfigError("models.toml is missing from the installation", hint="reinstall localllm")


@lru_cache(maxsize=4)
def load_catalog(path: Path | None = None) -> tuple[CatalogModel, ...]:
    path = path or default_catalog_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from None
    models = data.get("model")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{path}: no [[model]] tables", hint="each model is a [[model]] table")
    parsed = tuple(_parse_model(entry, index, path) for index, entry in enumerate(models, start=1))
    seen: set[str] = set()
    for model in parsed:
        if model.name in seen:
            raise ConfigError(f"{path}: model name {model.name!r} appears twice", hint="names must be unique")
        seen.add(model.name)
    return parsed


def _require(entry: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in entry:
        raise ConfigError(f"{where}: missing key {key!r}",
                          hint="see the first [[model]] in models.toml for the schema")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key} has the wrong type ({type(value).__name__})",
                          hint="see models.toml's header")
    return value


def _parse_model(entry: dict[str, Any], index: int, path: Path) -> CatalogModel:
    where = f"{path}: model #{index} ({entry.get('name', '?')})"
    uses = tuple(_require(entry, "uses", list, where))
    unknown = [u for u in uses if u not in USES]
    if unknown:
        raise ConfigError(f"{where}: unknown use {unknown[0]!r}", hint=f"uses are {', '.join(USES)}")
    quants = []
    for q_index, raw in enumerate(_require(entry, "quant", list, where), start=1):
        q_where = f"{where}, quant #{q_index}"
        quant = CatalogQuant(
            quant=_require(raw, "quant", str, q_where),
            file=_require(raw, "file", str, q_where),
            size=_require(raw, "size", int, q_where),
            repo=raw.get("repo"),
            package=raw.get("package"),
            approximate=bool(raw.get("approximate", False)),
        )
        if (quant.repo is None) == (quant.package is None):
            raise ConfigError(f"{q_where}: give exactly one of repo or package", hint="repo = \"owner/name\"")
        quants.append(quant)
    arch = None
    if "arch" in entry:
        raw_arch = entry["arch"]
        a_where = f"{where}, arch"
        arch = Architecture(
            layers=_require(raw_arch, "layers", int, a_where),
            embedding=_require(raw_arch, "embedding", int, a_where),
            heads=_require(raw_arch, "heads", int, a_where),
            kv_heads=_require(raw_arch, "kv_heads", int, a_where),
            feed_forward=_require(raw_arch, "feed_forward", int, a_where),
            vocab=_require(raw_arch, "vocab", int, a_where),
            head_dim=raw_arch.get("head_dim"),
            tied_embeddings=bool(raw_arch.get("tied_embeddings", False)),
        )
    return CatalogModel(
        arch=arch,
        name=_require(entry, "name", str, where),
        title=_require(entry, "title", str, where),
        family=_require(entry, "family", str, where),
        uses=uses,
        parameters=float(_require(entry, "parameters", (int, float), where)),
        licence=_require(entry, "licence", str, where),
        context_length=_require(entry, "context_length", int, where),
        quants=tuple(quants),
    )


def find_model(name: str, catalog: tuple[CatalogModel, ...]) -> CatalogModel | None:
    return next((m for m in catalog if m.name == name.lower()), None)


def estimated_info(model: CatalogModel, quant: CatalogQuant) -> ModelInfo | None:
    """A ModelInfo built from the catalog alone (shape numbers and file size), for verdicts before download.

    Weights outside the blocks (token embeddings, and the output head unless tied) are estimated at the file's
    average bits per weight; the rest is spread evenly over the blocks.
    """
    from localllm.core.model import ModelInfo

    arch = model.arch
    if arch is None:
        return None
    bytes_per_weight = quant.size / (model.parameters * 1e9)
    outside = int(arch.vocab * arch.embedding * bytes_per_weight * (1 if arch.tied_embeddings else 2))
    outside = min(outside, quant.size // 2)
    head_dim = arch.head_dim or arch.embedding // arch.heads
    return ModelInfo(
        path=f"catalog:{model.name}:{quant.quant.lower()}", file_size=quant.size, architecture=model.family,
        name=model.title, quant=quant.quant, context_length=model.context_length, block_count=arch.layers,
        embedding_length=arch.embedding, feed_forward_length=arch.feed_forward, head_count=arch.heads,
        head_count_kv=arch.kv_heads, key_length=head_dim, value_length=head_dim, vocab_size=arch.vocab,
        layer_bytes=(quant.size - outside) // arch.layers,
        non_layer_bytes=outside + (quant.size - outside) % arch.layers,
        parameters=int(model.parameters * 1e9), tokenizer_model=None, tokenizer_pre=None, chat_template=None,
    )
