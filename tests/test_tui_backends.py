"""The app on the server backends: an answer streams through a real llama_cpp.server (OpenAI-compatible) and through
the Ollama protocol stand-in, the status bar names the backend, and the model switcher offers the server's other
models."""

import pytest
from conftest import settings_for
from helpers.tui_helpers import ask, run, wait_until

from localllm.core.options import preset
from localllm.tasks.backends import pull_on_ollama
from localllm.tui.app import LocalLLMApp
from localllm.tui.chat import ChatPane
from localllm.tui.dialogs import PickOne

SHORT = preset("precise").with_overrides(max_tokens=8)


def choices_of(app) -> list[str]:
    options = app.screen.query_one("#choices")
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


@pytest.mark.parametrize("server", ["openai", "ollama"])
def test_an_answer_streams_through_a_server_and_the_switcher_offers_its_models(server, request, tmp_path):
    if server == "openai":
        process = request.getfixturevalue("llama_server")
        settings = settings_for(tmp_path, backend="openai", base_url=f"{process.url}/v1", model="smollm2-135m",
                                discover=False)
    else:
        process = request.getfixturevalue("ollama_standin")
        settings = settings_for(tmp_path, backend="ollama", ollama_host=process.url, model="smollm2:135m",
                                ctx=2048, discover=False)
        pull_on_ollama(settings, "tinyllama:latest")  # a second model on the server to switch to

    async def session():
        app = LocalLLMApp(settings, SHORT)
        async with app.run_test(size=(140, 40)) as pilot:
            pane = app.query_one(ChatPane)
            before = await ask(pilot, pane, "Name a colour.")
            await wait_until(pilot, lambda: not pane.generating and pane.session.stats.turns > before)
            assert pane.session.history[-1].content.strip()
            status = str(pane.query_one("#status").render())
            assert server in status and "context" in status, status
            await pilot.press("ctrl+l")
            # The dialog's list is there once the screen is composed, a moment after it is pushed.
            await wait_until(pilot, lambda: isinstance(app.screen, PickOne) and bool(app.screen.query("#choices")))
            labels = choices_of(app)
            assert any("smollm2-135m" in label and "package" in label for label in labels), labels
            if server == "ollama":
                assert any(label.startswith("tinyllama:latest · Ollama") for label in labels), labels

    run(session())
