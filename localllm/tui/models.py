"""The models pane: installed and discovered models with their fit verdicts, the catalog with search as you type,
pull with a live progress bar that can be cancelled (the partial file stays, so a later pull resumes), delete with
a confirmation, and the selected model's metadata."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.widgets import DataTable, Input, Label, ProgressBar, Static

from localllm.core.errors import LocalLLMError
from localllm.core.settings import Settings
from localllm.core.units import human_size, parameter_count
from localllm.hardware.report import HardwareReport
from localllm.tui.activity import FooterFlag
from localllm.tui.inert import plain

HUB_PREFIX = "hf://"
SPEED = "EST. SPEED"
"""The column of decode speeds: estimates from memory bandwidth (localllm.hardware.speed), never measurements."""


class ModelsPane(Vertical):
    DEFAULT_CSS = """
    ModelsPane .heading { text-style: bold; padding: 0 1; }
    ModelsPane #models-lists { width: 1fr; }
    ModelsPane #installed { height: 1fr; }
    ModelsPane #catalog { height: 2fr; }
    ModelsPane #metadata-box { width: 36; border-left: solid $primary-background; padding: 0 1; }
    ModelsPane.-medium #metadata-box { width: 28; }
    ModelsPane.-narrow #metadata-box { display: none; }
    ModelsPane #pull-row { height: 1; display: none; padding: 0 1; }
    ModelsPane #pull-row.active { display: block; }
    ModelsPane #pull-label { width: auto; margin-right: 1; }
    ModelsPane #pull-stats { width: auto; margin-left: 1; }
    ModelsPane #partials { height: auto; padding: 0 1; color: $text-muted; }
    ModelsPane #models-status { height: 1; background: $primary-background; padding: 0 1; }
    """
    pulling = FooterFlag(None)
    """The model being pulled, if one is (x cancels it)."""
    BINDINGS = [
        Binding("p", "pull", "Pull", id="models.pull"),
        Binding("x,escape", "cancel_pull", "Cancel pull", id="models.cancel"),
        Binding("d,delete", "delete", "Delete", id="models.delete"),
        Binding("u", "use", "Use in chat", id="models.use"),
        Binding("slash", "search", "Search", id="models.search"),
        Binding("ctrl+r", "refresh", "Refresh", id="models.refresh"),
    ]

    class UseModel(Message):
        """Asks the app to load this model for chat; ``name`` resolves to exactly the file chosen."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, settings: Settings, *, report: HardwareReport | None = None) -> None:
        """``report`` fixes the hardware the verdicts are judged against; by default it is detected."""
        super().__init__(id="models-pane")
        self.settings = settings
        self.report = report
        self.installed: list = []
        self.catalog: list = []
        self.partials: list = []
        self.selected: tuple[str, int] | None = None
        """("installed" or "catalog", row index) of the row the metadata shows."""
        self._cancel = threading.Event()
        self._listed = False
        self._catalog_shown: list[int] | None = None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.pulling is not None if action == "cancel_pull" else True

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="models-lists"):
                yield Label("Installed and discovered", classes="heading", id="installed-heading")
                yield DataTable(id="installed", cursor_type="row", zebra_stripes=True)
                yield Label("Catalog", classes="heading", id="catalog-heading")
                yield Input(placeholder="search the catalog (or hf://OWNER/REPO/FILE.gguf, then p to pull)",
                            id="catalog-search")
                yield DataTable(id="catalog", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="metadata-box"):
                yield Static("Loading…", id="metadata")
        yield Static("", id="partials")
        with Horizontal(id="pull-row"):
            yield Label("", id="pull-label")
            yield ProgressBar(id="pull-progress", show_eta=True)
            yield Label("", id="pull-stats")
        yield Static("reading the models…", id="models-status")

    def on_mount(self) -> None:
        self.action_refresh()

    def on_resize(self) -> None:
        width = self.size.width
        self.set_class(width < NARROW, "-narrow")
        self.set_class(NARROW <= width < WIDE, "-medium")
        if self._listed:
            self._show_installed()
            self._fill_catalog(force=True)

    def _room(self) -> int:
        """Columns the tables may fill: the pane less the metadata beside them and a scrollbar."""
        width = self.size.width or 120
        beside = 0 if width < NARROW else (29 if width < WIDE else 37)
        return width - beside - 2

    def _lay_out(self, table: DataTable, labels: tuple[str, ...], rows: Sequence[tuple[tuple[str, ...], str]],
                 steps: tuple[tuple[str, int, int], ...]) -> None:
        """``rows``: (cells, key); the columns fitted to the room (fit_columns), and the table filled again."""
        cursor = table.cursor_row
        kept = fit_columns(labels, [cells for cells, _ in rows], self._room(), steps)
        table.clear(columns=True)
        for index, width in kept:
            table.add_column(labels[index], width=width, key=str(index))
        for cells, key in rows:
            table.add_row(*(plain(shorten(cells[index], width)) for index, width in kept), key=key)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)

    # -- listing ---------------------------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        self.load_rows()

    @work(thread=True, exclusive=True, group="models-list")
    def load_rows(self) -> None:
        from localllm.tasks.models import catalog_rows, installed_rows, partial_downloads

        try:
            if self.report is None:
                from localllm.hardware.detect import detect_hardware

                self.report = detect_hardware(include_llama_cpp="if-gpu")
            installed = installed_rows(self.settings, self.report)
            catalog = catalog_rows(self.settings, self.report)
            partials = partial_downloads(self.settings)
        except LocalLLMError as exc:
            self.app.call_from_thread(self._error, exc)
            return
        self.app.call_from_thread(self._show_rows, installed, catalog, partials)

    def _show_rows(self, installed: list, catalog: list, partials: list) -> None:
        self.installed, self.catalog, self.partials = installed, catalog, partials
        self._show_installed()
        self._fill_catalog(force=True)
        self._show_partials()
        self.query_one("#installed-heading", Label).update(f"Installed and discovered ({len(installed):,})")
        self.query_one("#catalog-heading", Label).update(f"Catalog ({len(catalog):,} files)")
        if not self._listed:
            self._listed = True
            self._status("/ search · p pull · x cancel a pull · d delete · u use in chat · ctrl+r refresh")
        if self.selected is None and installed:
            self.selected = ("installed", 0)
        self._show_metadata()

    def _show_installed(self) -> None:
        rows = []
        for index, row in enumerate(self.installed):
            size = human_size(row.info.file_size) if row.info else "-"
            quant = (row.info.quant if row.info else None) or row.ref.quant or "-"
            verdict = row.verdict if row.info is None or row.info.chat_template else f"{row.verdict} · base model"
            rows.append(((row.ref.name, size, quant, verdict, speed_cell(row.plan), row.ref.source), str(index)))
        self._lay_out(self.query_one("#installed", DataTable), INSTALLED_COLUMNS, rows, INSTALLED_STEPS)

    def _show_partials(self) -> None:
        lines = []
        for item in self.partials:
            share = f"{100 * item.have / item.size:.0f} %" if item.size else "?"
            state = f"downloading ({item.active})" if item.active else "paused: pull it again to resume"
            lines.append(f"partial: {item.target.name} {human_size(item.have)} of {human_size(item.size)} ({share}), "
                         f"{state}")
        partials = self.query_one("#partials", Static)
        partials.update(plain("\n".join(lines)))
        partials.display = bool(lines)

    @on(Input.Changed, "#catalog-search")
    def filter_catalog(self) -> None:
        self._fill_catalog()

    @on(Input.Submitted, "#catalog-search")
    def search_done(self) -> None:
        if self.query_one("#catalog-search", Input).value.strip().startswith(HUB_PREFIX):
            self.action_pull()
        self.query_one("#catalog", DataTable).focus()  # where p, x and the arrow keys act

    def action_search(self) -> None:
        self.query_one("#catalog-search", Input).focus()

    def _fill_catalog(self, *, force: bool = False) -> None:
        terms = [t for t in self.query_one("#catalog-search", Input).value.lower().split()
                 if not t.startswith(HUB_PREFIX)]
        matching = [index for index, row in enumerate(self.catalog)
                    if all(term in catalog_text(row) for term in terms)]
        if matching == self._catalog_shown and not force:
            return  # most keystrokes leave the rows as they were: rebuilding the table each time would lag
        self._catalog_shown = matching
        rows = []
        for index in matching:
            row = self.catalog[index]
            cells = (row.model.name, row.quant.quant.lower(), parameter_count(row.model.parameters * 1e9),
                     ("~" if row.quant.approximate else "") + human_size(row.quant.size), row.verdict,
                     speed_cell(row.plan), "installed" if row.installed else "")
            rows.append((cells, str(index)))
        self._lay_out(self.query_one("#catalog", DataTable), CATALOG_COLUMNS, rows, CATALOG_STEPS)

    # -- metadata --------------------------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted)
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Refilling a table moves its cursor too; only the table the user is in changes the selection.
        if event.data_table.has_focus:
            self._select(event.data_table)

    def on_descendant_focus(self, event) -> None:
        if isinstance(event.widget, DataTable):
            self._select(event.widget)

    def _select(self, table: DataTable) -> None:
        if table.id not in ("installed", "catalog") or not table.row_count:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key is not None:
            self.selected = (table.id, int(key))
            self._show_metadata()

    def _selected_row(self, kind: str):
        if self.selected is None or self.selected[0] != kind:
            return None
        rows = self.installed if kind == "installed" else self.catalog
        return rows[self.selected[1]] if self.selected[1] < len(rows) else None

    def _show_metadata(self) -> None:
        view = plain("Nothing selected.")
        if (row := self._selected_row("installed")) is not None:
            view = metadata_view(*installed_metadata(row))
        elif (row := self._selected_row("catalog")) is not None:
            view = metadata_view(*catalog_metadata(row))
        self.query_one("#metadata", Static).update(view)

    # -- use -------------------------------------------------------------------------------------------------------
    def action_use(self) -> None:
        from localllm.tasks.models import name_to_load

        row = self._selected_row("installed")
        if row is not None:
            self.post_message(self.UseModel(name_to_load(row.ref, self.installed)))
            self._status(f"switching the chat to {row.ref.name}")
            return
        row = self._selected_row("catalog")
        if row is not None and row.installed:
            self.post_message(self.UseModel(f"{row.model.name}:{row.quant.quant.lower()}"))
            self._status(f"switching the chat to {row.model.name}:{row.quant.quant.lower()}")
            return
        self.app.notify("select an installed model first (pull a catalog model to install it)", severity="warning")

    # -- pull ------------------------------------------------------------------------------------------------------
    def action_pull(self) -> None:
        if self.pulling:
            self.app.notify(f"{self.pulling} is being pulled: wait, or cancel it with x", severity="warning")
            return
        typed = self.query_one("#catalog-search", Input).value.strip()
        row = self._selected_row("catalog")
        if typed.startswith(HUB_PREFIX):
            spec = typed
        elif row is not None:
            spec = f"{row.model.name}:{row.quant.quant.lower()}"
            if row.plan is not None and not row.plan.fits:
                from localllm.tasks.loading import refusal

                # Asked before anything is fetched: the catalog's sizes already say so (a pull judges the file's
                # own header again, and asks again if that refuses too).
                self._offer_pull_anyway(spec, refusal(row.plan, row.model.name))
                return
        else:
            self.app.notify("choose a catalog row, or type hf://OWNER/REPO/FILE.gguf", severity="warning")
            return
        self._start_pull(spec)

    def _start_pull(self, spec: str, *, force: bool = False) -> None:
        self.pulling = spec
        self._cancel.clear()
        self._status(f"pulling {spec} anyway: checking the Hub and disk space…" if force
                     else f"pulling {spec}: checking the Hub, disk space and fit…")
        self.pull(spec, force)

    def action_cancel_pull(self) -> None:
        if self.pulling:
            self._cancel.set()
            self._status(f"cancelling {self.pulling}…")

    @work(thread=True, exclusive=True, group="models-pull")
    def pull(self, spec: str, force: bool = False) -> None:
        """``force``: download even when the plan says it will not fit (the answer to the refusal's question)."""
        from localllm.core.errors import WontFit
        from localllm.store.transfer import TransferCancelled
        from localllm.tasks.models import pull, resolve_pull

        meter = PullMeter(lambda done, total, rate: self.app.call_from_thread(self._progress, done, total, rate))
        try:
            if self.report is None:
                from localllm.hardware.detect import detect_hardware

                self.report = detect_hardware(include_llama_cpp="if-gpu")
            target = resolve_pull(self.settings, spec, self.report)
            self.app.call_from_thread(self._pull_started, target.name, target.remote.size, target.why)
            result = pull(self.settings, target, self.report, force=force, progress=meter, cancel=self._cancel,
                          on_wait=lambda who: self.app.call_from_thread(
                              self._status, f"{who} is pulling this model; waiting for it"))
        except TransferCancelled as exc:
            self.app.call_from_thread(self._pull_ended, f"{exc.message}: pull it again to resume", "warning")
        except WontFit as exc:
            self.app.call_from_thread(self._pull_ended, None)
            if exc.plan is not None:  # the file's own plan refused it; a download can go ahead all the same
                self.app.call_from_thread(self._offer_pull_anyway, spec, exc)
            else:
                self.app.call_from_thread(self._error, exc)
        except LocalLLMError as exc:
            self.app.call_from_thread(self._pull_ended, None)
            self.app.call_from_thread(self._error, exc)
        else:
            done = (f"{target.name} was already installed" if result.already_installed
                    else f"installed {target.name} ({human_size(result.path.stat().st_size)}, sha256 verified)")
            self.app.call_from_thread(self._pull_ended, done, "information")

    def _offer_pull_anyway(self, spec: str, refusal: LocalLLMError) -> None:
        """The plan says it will not fit: say why, and let the user download it all the same (for another machine,
        a smaller context, or memory about to be freed). Cancel has the focus."""
        from localllm.tui.dialogs import Confirm

        self._status(f"not pulled: {refusal.message}")
        question = f"{refusal.message}."
        hint = re.sub(r": -o ctx=\d+", "", refusal.hint or "")  # the command line's way to set it, not the app's
        if hint:
            question += f"\n{hint[0].upper()}{hint[1:]}."
        question += (f"\n\nPull {spec} anyway? It is downloaded and installed; loading it is refused while it does "
                     "not fit.")

        def answered(yes: bool | None) -> None:
            if not yes:
                self._status(f"not pulled: {refusal.message}")
            elif self.pulling:  # another pull started meanwhile
                self.app.notify(f"{self.pulling} is being pulled: wait, then pull {spec} again", severity="warning")
            else:
                self._start_pull(spec, force=True)

        self.app.push_screen(Confirm(question, yes="Pull anyway", no="Cancel"), answered)

    def _pull_started(self, name: str, size: int, why: str) -> None:
        self.query_one("#pull-label", Label).update(plain(name))
        self.query_one("#pull-progress", ProgressBar).update(total=size, progress=0)
        self.query_one("#pull-row").add_class("active")
        self._status(f"pulling {name} ({human_size(size)}): {why} · x cancels")

    def _progress(self, done: int, total: int, rate: float | None) -> None:
        self.query_one("#pull-progress", ProgressBar).update(total=total, progress=done)
        speed = f" · {human_size(rate)}/s" if rate else ""
        self.query_one("#pull-stats", Label).update(f"{human_size(done)} of {human_size(total)}{speed}")

    def _pull_ended(self, message: str | None, severity: SeverityLevel = "information") -> None:
        self.pulling = None
        self.query_one("#pull-row").remove_class("active")
        if message:
            self._status(message)
            self.app.notify(message, title="pull", severity=severity)
        self.load_rows()

    # -- delete ----------------------------------------------------------------------------------------------------
    def action_delete(self) -> None:
        from localllm.tasks.models import removable

        row = self._selected_row("installed")
        if row is None:
            self.app.notify("select an installed model to delete", severity="warning")
            return
        reason = removable(row.ref)
        if reason:
            self._status(f"not deleted: {reason}")
            self.app.notify(reason, title="not deleted", severity="warning")
            return
        size = human_size(row.ref.path.stat().st_size) if row.ref.path.exists() else "?"
        question = f"Delete {row.ref.name} ({size})?\n{row.ref.path}"
        if row.ref.named is not None:  # only the name goes: the file is the model it is built on
            question = f"Remove the name {row.ref.name}?\nIts file stays: {row.ref.path}"

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete(row.ref)
            else:
                self._status(f"kept {row.ref.name}")

        from localllm.tui.dialogs import Confirm

        self.app.push_screen(Confirm(question, yes="Delete", no="Keep"), answered)

    @work(thread=True, group="models-delete")
    def delete(self, ref) -> None:
        from localllm.tasks.models import remove

        try:
            freed = remove(self.settings, ref)
        except (LocalLLMError, OSError) as exc:
            error = exc if isinstance(exc, LocalLLMError) else LocalLLMError(f"cannot delete {ref.path}: {exc}")
            self.app.call_from_thread(self._error, error)
            return
        self.app.call_from_thread(self._deleted, ref, freed)

    def _deleted(self, ref, freed: int) -> None:
        self._status(f"removed the name {ref.name}" if ref.named is not None else
                     f"deleted {ref.path} ({human_size(freed)})")
        self.selected = None
        self.load_rows()

    def on_unmount(self) -> None:
        self._cancel.set()  # a pull still running stops and keeps its partial file for the next start

    # -- messages --------------------------------------------------------------------------------------------------
    def _status(self, text: str) -> None:
        self.query_one("#models-status", Static).update(plain(text))

    def _error(self, exc: LocalLLMError) -> None:
        self._status(f"error: {exc.message}")
        self.app.notify(exc.hint or exc.message, title=exc.message[:60], severity="error")


class PullMeter:
    """Turns the transfer's per-block callback into at most ten updates a second, with the speed of this run."""

    def __init__(self, report) -> None:
        self.report = report
        self.last = 0.0
        self.start: tuple[float, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = (now, done)  # a resumed pull's speed counts only the bytes of this run
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        elapsed = now - self.start[0]
        self.report(done, total, (done - self.start[1]) / elapsed if elapsed > 0 else None)


def speed_cell(plan) -> str:
    # "tok/s": the column is read at a glance, and "~0.6 tokens/s" was cut in a 120-column catalog.
    speed = (plan.speed if plan is not None else None) or "-"
    return speed.replace(" tokens/s", " tok/s").replace(" token/s", " tok/s")


NARROW, WIDE = 100, 140
"""Pane widths: under NARROW the metadata is not shown beside the tables, which need the room; from WIDE it has its
full width."""
INSTALLED_COLUMNS = ("NAME", "SIZE", "QUANT", "VERDICT", SPEED, "WHERE")
CATALOG_COLUMNS = ("NAME", "QUANT", "PARAMS", "DOWNLOAD", "VERDICT", SPEED, "")
# What gives way, in turn, when a table is wider than its room: ("shrink", column, down to width) or ("drop",
# column, 0). The verdict and the speed never do: they are what the pane is for.
INSTALLED_STEPS = (("shrink", 5, 10), ("shrink", 0, 18), ("drop", 5, 0), ("drop", 1, 0), ("shrink", 0, 12))
CATALOG_STEPS = (("shrink", 0, 18), ("drop", 2, 0), ("shrink", 0, 14), ("drop", 3, 0), ("drop", 1, 0),
                 ("shrink", 0, 10))


def fit_columns(labels: tuple[str, ...], rows: Sequence[tuple[str, ...]], room: int,
                steps: tuple[tuple[str, int, int], ...]) -> list[tuple[int, int]]:
    """(column index, width) of the columns to show in ``room`` cells: each as wide as its widest cell, then the
    ``steps`` taken in turn until the table fits (a column is padded by a cell each side)."""
    widths = {index: max([len(label), *(len(cells[index]) for cells in rows)]) for index, label in enumerate(labels)}

    def total() -> int:
        return sum(width + 2 for width in widths.values())

    for kind, index, to in steps:
        if total() <= room:
            break
        if index not in widths:
            continue
        if kind == "drop":
            del widths[index]
        else:
            widths[index] = max(min(widths[index], to), widths[index] - (total() - room))
    return sorted(widths.items())


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def catalog_text(row) -> str:
    """What the search box matches: name, quant, title and uses."""
    return " ".join((row.model.name, row.quant.quant, row.model.title, *row.model.uses)).lower()


def installed_metadata(row) -> tuple[str, list[tuple[str, str]]]:
    ref, info = row.ref, row.info
    fields = [("where", ref.source), ("file", str(ref.path))]
    if ref.named is not None:  # what the name adds to the file it is built on
        from localllm.tasks.named import describe_parameters

        fields += [("named", f"built on {ref.named.base}"), ("system", ref.named.system or "-"),
                   ("parameters", describe_parameters(ref.named.parameters) or "-")]
    if info is None:
        return ref.name, fields + [("problem", row.problem or "unknown")]
    fields += [("size", human_size(info.file_size)), ("architecture", info.architecture),
               ("parameters", parameter_count(info.parameters, info.size_label)),
               ("quant", info.quant or "-"), ("context", f"{info.context_length:,} tokens (trained)"),
               ("tokenizer", info.tokenizer_kind),
               ("chat template", "yes" if info.chat_template else
                "no: a base model; the chat continues your text (-o template=NAME on the command line picks one)"),
               ("licence", info.license or "-"), ("verdict", row.verdict)]
    if row.plan is not None:
        fields += plan_fields(row.plan)
    return ref.name, fields


def catalog_metadata(row) -> tuple[str, list[tuple[str, str]]]:
    model, quant, plan = row.model, row.quant, row.plan
    source = f"hf://{quant.repo}/{quant.file}" if quant.repo else f"pip package {quant.package}"
    fields = [("name", f"{model.name}:{quant.quant.lower()}"), ("uses", ", ".join(model.uses)),
              ("parameters", parameter_count(model.parameters * 1e9)), ("quant", quant.quant),
              ("download", human_size(quant.size)), ("context", f"{model.context_length:,} tokens (trained)"),
              ("licence", model.licence), ("source", source), ("verdict", row.verdict)]
    if plan is not None:
        fields += plan_fields(plan)
    fields.append(("installed", "yes (u uses it)" if row.installed else "no (p pulls it)"))
    return model.title, fields


def plan_fields(plan) -> list[tuple[str, str]]:
    fields = []
    if plan.speed:
        fields.append(("speed", f"{plan.speed_with_threads} (an estimate; slower as the context fills)"))
    fields.append(("memory", f"about {human_size(plan.memory.total)} at {plan.n_ctx:,} tokens"))
    return fields


def metadata_view(title: str, fields: list[tuple[str, str]]):
    """A two-column grid: long values (paths, URIs) wrap inside their own column."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in fields:
        grid.add_row(key, Text(value))
    return Group(Text(title, style="bold"), Text(""), grid)
