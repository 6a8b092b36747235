"""Named models: a name for a model file with a system prompt and parameters, made by `localllm create` (from a model
or a Modelfile), listed by `list`, removed by `rm` (the name only, never the file), and used by `-m NAME`, where its
system prompt and parameters are defaults under the command's own flags. The CLI runs as a real process on the real
bundled model (creating, listing and removing read its GGUF header only; the `run` tests load it)."""

from __future__ import annotations

import json
import logging
import os

import pytest
from conftest import BUNDLED_MODEL, run_cli, settings_for

from localllm.core.errors import UsageError
from localllm.core.options import preset
from localllm.store.modelfile import parse_modelfile
from localllm.store.named import (
    NamedModel,
    name_problem,
    named_dir,
    normal_name,
    parameters_from,
    read_named,
    write_named,
)
from localllm.tasks.named import decoding_options, system_prompt

PACKAGED = "smollm2-135m"


def named_record(home, name):
    return json.loads((home / "data" / "named" / f"{name.replace(':', '@')}.json").read_text())


# -- names, parameters, Modelfiles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bot", "my-bot_2.1", "Bot:V2", "_x", "a" * 80, f"a:{'b' * 80}"])
def test_ollama_s_model_tag_names_are_taken(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name, why", [
    ("", "empty"), ("../etc", "not a model name"), ("a/b", "not a model name"), ("a\\b", "not a model name"),
    (".hidden", "not a model name"), ("-x", "not a model name"), ("a:", "empty tag"), (":v1", "empty name"),
    ("a:b:c", "not a model name"), ("a" * 81, "more than 80"), (f"a:{'b' * 81}", "more than 80"),
    ("x.gguf", "reads as a file's path"), ("bot\n", "not a model name"), ("bøt", "not a model name"),
])
def test_a_name_that_is_not_one_is_refused_with_why(name, why):
    assert why in (name_problem(name) or "")


def test_names_are_lower_case_and_latest_is_no_tag():
    assert normal_name("My-Bot:latest") == "my-bot" and normal_name("bot:V2") == "bot:v2"
    with pytest.raises(UsageError, match="the name"):
        normal_name("a/b")


def test_parameters_take_ollama_s_names_and_localllm_s_checked_for_type_and_range():
    found = parameters_from([("num_ctx", 2048), ("num_predict", 64), ("temperature", 0.2), ("stop", ["###", "END"]),
                             ("top_k", "20"), ("seed", 7)], "parameters")
    assert found == {"ctx": 2048, "max_tokens": 64, "temperature": 0.2, "stop": ("###", "END"), "top_k": 20, "seed": 7}
    assert parameters_from([("num_predict", -1)], "p") == {}  # Ollama's "no limit" is localllm's default
    assert parameters_from([("stop", "a"), ("stop", "b")], "p") == {"stop": ("a", "b")}  # PARAMETER stop lines add up
    for pairs, said in (([("mirostat", 1)], "parameters.mirostat is not a parameter"),
                        ([("temperature", 9)], "parameters.temperature: 9 is out of range"),
                        ([("temperature", True)], "parameters.temperature must be a number"),
                        ([("num_ctx", 4096.5)], "parameters.num_ctx: ctx needs an integer"),
                        ([("stop", [""])], "parameters.stop[0] must be a non-empty string"),
                        ([("stop", ["x"] * 65)], "at most 64")):
        with pytest.raises(UsageError) as refused:
            parameters_from(pairs, "parameters")
        assert said in refused.value.message


def test_a_modelfile_s_from_system_parameters_and_licence_are_read():
    text = '''# a comment
FROM smollm2-135m
SYSTEM """You are a pirate.
Always say "Arr"."""
PARAMETER temperature 0.3
PARAMETER stop "###"
parameter stop <|im_end|>
LICENSE MIT
TEMPLATE ""
REQUIRES 0.9.0
'''
    found = parse_modelfile(text)
    assert found.base == "smollm2-135m" and found.system == 'You are a pirate.\nAlways say "Arr".'
    assert found.parameters == [("temperature", "0.3"), ("stop", "###"), ("stop", "<|im_end|>")]
    assert found.license == "MIT"
    assert parameters_from(found.parameters, "PARAMETER") == {"temperature": 0.3, "stop": ("###", "<|im_end|>")}


@pytest.mark.parametrize("text, said", [
    ("FROM x\nTEMPLATE {{ .Prompt }}", "line 2: TEMPLATE (a Go template for Ollama's prompts) is not supported"),
    ('FROM x\nTEMPLATE """{{ .System }}\n{{ .Prompt }}"""', "TEMPLATE (a Go template"),
    ("FROM x\nADAPTER ./lora.gguf", "line 2: ADAPTER (a LoRA adapter) is not supported"),
    ("FROM x\nMESSAGE user hi", "MESSAGE (a conversation to start from) is not supported"),
    ("FROM x\nSYSTME hi", "line 2: unknown instruction 'SYSTME'"),
    ("SYSTEM hi", "no FROM line"), ("FROM a\nFROM b", "line 2: a second FROM"),
    ('FROM x\nSYSTEM """never closed', "line 2: the \"\"\" block is never closed"),
    ('FROM x\nSYSTEM "open', "line 2: the quoted text is never closed"),
    ("FROM x\nPARAMETER temperature", "line 2: PARAMETER needs a name and a value"),
    ("FROM x\x00", "NUL"), ("FROM x\n" + "#" * (1024 * 1024), "more than 1,048,576 characters"),
])
def test_what_a_modelfile_cannot_say_here_is_refused_naming_the_line(text, said):
    with pytest.raises(UsageError) as refused:
        parse_modelfile(text)
    assert said in refused.value.message


def test_a_damaged_record_is_a_warning_and_the_others_still_list(tmp_path, caplog):
    settings = settings_for(tmp_path)
    write_named(settings.paths, NamedModel("good", PACKAGED, str(BUNDLED_MODEL), "Be brief.", {"temperature": 0.1}))
    folder = named_dir(settings.paths)
    assert [p.name for p in folder.iterdir()] == ["good.json"]  # written atomically: no temporary file left
    (folder / "bad.json").write_text('{"name": "bad", "base": "x", "path": "/x.gguf", "parameters": {"top_p": 7}}')
    (folder / "other.json").write_text('{"name": "someone-else"}')
    with caplog.at_level(logging.WARNING, logger="localllm"):
        from localllm.store.named import all_named

        assert [model.name for model in all_named(settings.paths)] == ["good"]
    assert "bad.json is damaged (parameters.top_p: 7 is out of range)" in caplog.text
    assert read_named(settings.paths, "../good") is None  # never a path: not a name


def test_a_named_model_s_parameters_sit_under_the_command_s_flags(tmp_path):
    settings = settings_for(tmp_path)
    write_named(settings.paths, NamedModel("bot", PACKAGED, str(BUNDLED_MODEL), "You are a pirate.",
                                           {"temperature": 0.2, "top_k": 5, "max_tokens": 40, "ctx": 1024}))
    plain = decoding_options(settings, "bot")
    assert (plain.temperature, plain.top_k, plain.max_tokens, plain.ctx) == (0.2, 5, 40, 1024)
    # -o wins; an explicit --preset keeps its own keys (temperature, top_k...) but not the others
    flagged = decoding_options(settings, "bot:latest", assignments=["max_tokens=3"], preset_name="creative")
    assert (flagged.temperature, flagged.top_k, flagged.max_tokens, flagged.ctx) == (1.0, 100, 3, 1024)
    assert decoding_options(settings, PACKAGED) == preset("balanced")
    assert system_prompt(settings, "bot", None) == "You are a pirate."
    assert system_prompt(settings, "bot", "Answer in French.") == "Answer in French."
    assert system_prompt(settings, PACKAGED, None) is None
    # The configured model counts when the command names none
    assert decoding_options(settings_for(tmp_path, model="bot"), None).max_tokens == 40


def test_an_upload_is_refused_before_a_byte_when_the_disk_keeps_no_room(tmp_path):
    from localllm.store.blobs import BlobUpload, NoRoom, blobs_dir

    settings = settings_for(tmp_path, min_free_disk_mb=1 << 40)
    with pytest.raises(NoRoom, match="no room for an upload"):
        BlobUpload(settings, "0" * 64)
    roomy = settings_for(tmp_path)
    upload = BlobUpload(roomy, "0" * 64)
    with pytest.raises(NoRoom, match="does not fit"):
        upload.check_declared(1 << 62)  # a Content-Length the disk cannot take
    with pytest.raises(UsageError, match="not a GGUF file"):
        upload.write(b"PK\x03\x04 a zip")
    upload.discard()
    assert list(blobs_dir(roomy).iterdir()) == []


# -- the command line -----------------------------------------------------------------------------------------------
def test_create_list_and_rm_a_named_model(home):
    made = run_cli("create", "Helper", "--from", PACKAGED, "-s", "Answer briefly.", "-o", "temperature=0.2",
                   "-o", "num_ctx=1024", "-o", "stop=###", home=home)
    assert made.returncode == 0, made.stderr_text
    assert made.stdout_text.strip() == "helper"
    assert "created helper (built on smollm2-135m, with a system prompt, temperature=0.2 ctx=1024 stop='###')" \
        in made.stderr_text
    record = named_record(home, "helper")
    assert record["path"] == str(BUNDLED_MODEL) and record["parameters"] == {"temperature": 0.2, "ctx": 1024,
                                                                             "stop": ["###"]}
    listed = {row["name"]: row for row in json.loads(run_cli("list", "--json", home=home).stdout_text)}
    assert listed["helper"]["named"] == {"base": PACKAGED, "system": "Answer briefly.",
                                         "parameters": {"temperature": 0.2, "ctx": 1024, "stop": ["###"]}}
    assert listed["helper"]["where"] == "named, on smollm2-135m" and listed["helper"]["quant"] == "Q4_1"
    table = run_cli("list", home=home).stdout_text
    assert "named, on smollm2-135m" in table
    shown = json.loads(run_cli("show", "helper", "--json", home=home).stdout_text)
    assert shown["named"]["system"] == "Answer briefly." and shown["plan"]["n_ctx"] == 1024  # its own window
    assert "system prompt  Answer briefly." in run_cli("show", "helper", home=home).stdout_text
    # A named model built on a named model inherits its system prompt and parameters under its own
    again = run_cli("create", "helper2", "--from", "helper:latest", "-o", "temperature=0.9", home=home)
    assert again.returncode == 0, again.stderr_text
    assert named_record(home, "helper2")["parameters"] == {"temperature": 0.9, "ctx": 1024, "stop": ["###"]}
    assert named_record(home, "helper2")["system"] == "Answer briefly."
    # rm asks (and refuses where it cannot), then removes the name alone: the file stays, as does its model
    refused = run_cli("rm", "helper", home=home)
    assert refused.returncode == 2 and "pass -y to confirm" in refused.stderr_text
    removed = run_cli("rm", "helper:latest", "-y", home=home)
    assert removed.returncode == 0 and "removed the name helper (its file stays" in removed.stderr_text
    assert BUNDLED_MODEL.is_file()
    names = [row["name"] for row in json.loads(run_cli("list", "--json", home=home).stdout_text)]
    assert names == [PACKAGED, "helper2"]


def test_create_from_a_modelfile_with_a_relative_gguf_path(home, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    os.symlink(BUNDLED_MODEL, folder / "mine.gguf")  # the user's file, which localllm must never delete
    (folder / "Modelfile").write_text('FROM ./mine.gguf\nSYSTEM """Be a poet."""\nPARAMETER num_predict 12\n'
                                      "PARAMETER temperature 0\n")
    made = run_cli("create", "poet", "-f", str(folder / "Modelfile"), "-o", "temperature=0.5", home=home)
    assert made.returncode == 0, made.stderr_text
    record = named_record(home, "poet")
    assert record["path"] == str(BUNDLED_MODEL.resolve()) and record["base"] == str(BUNDLED_MODEL.resolve())
    assert record["system"] == "Be a poet." and record["parameters"] == {"max_tokens": 12, "temperature": 0.5}
    assert run_cli("rm", "poet", "-y", home=home).returncode == 0
    assert (folder / "mine.gguf").exists()


@pytest.mark.parametrize("args, said", [
    (["create", "x", "-f", "MODELFILE"], "Modelfile line 2: TEMPLATE (a Go template for Ollama's prompts) is not "
                                         "supported"),
    (["create", "a/b", "--from", PACKAGED], "the name \"a/b\" is not a model name"),
    (["create", PACKAGED, "--from", PACKAGED], "not created: smollm2-135m is the name of an installed model"),
    (["create", "qwen2.5-1.5b-instruct", "--from", PACKAGED], "is the name of a catalog model"),
    (["create", "x", "--from", "no-such-model"], "unknown model 'no-such-model'"),
    (["create", "x", "--from", "MODELFILE"], "is not a GGUF model file"),
    (["create", "x"], "create needs what to build on"),
    (["create", "x", "--from", PACKAGED, "-o", "mirostat=1"], "mirostat is not a parameter localllm has"),
])
def test_create_refuses_clearly(home, tmp_path, args, said):
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {PACKAGED}\nTEMPLATE {{{{ .Prompt }}}}\n")
    done = run_cli(*[str(modelfile) if arg == "MODELFILE" else arg for arg in args], home=home)
    assert done.returncode != 0 and said in done.stderr_text, done.stderr_text
    assert "Traceback" not in done.stderr_text
    assert not (home / "data" / "named").exists() or not list((home / "data" / "named").iterdir())


@pytest.mark.usefixtures("bundled_model")
def test_run_with_a_named_model_uses_its_system_prompt_and_parameters_under_the_flags(home):
    made = run_cli("create", "pirate", "--from", PACKAGED, "-s", "You are a pirate. Answer in pirate speech.",
                   "-o", "num_predict=6", "-o", "num_ctx=1024", "-o", "temperature=0", home=home)
    assert made.returncode == 0, made.stderr_text
    named = run_cli("run", "-m", "pirate", "--json", "-v", "Hello", home=home)
    assert named.returncode == 0, named.stderr_text
    answer = json.loads(named.stdout_text)
    assert answer["model"] == "pirate" and answer["usage"]["completion_tokens"] == 6 and answer["finish"] == "length"
    assert "context 1,024" in named.stderr_text  # num_ctx is the window it loads with
    # Its system prompt is in the prompt: the same count as the base model given that system prompt with -s
    same = json.loads(run_cli("run", "-m", PACKAGED, "-s", "You are a pirate. Answer in pirate speech.", "--json",
                              "-o", "max_tokens=1", "Hello", home=home).stdout_text)
    assert answer["usage"]["prompt_tokens"] == same["usage"]["prompt_tokens"]
    # The command's own flags win: -o over its parameters, -s over its system prompt
    flagged = json.loads(run_cli("run", "-m", "pirate", "-o", "max_tokens=2", "-s", "Be brief.", "--json", "Hello",
                                 home=home).stdout_text)
    brief = json.loads(run_cli("run", "-m", PACKAGED, "-s", "Be brief.", "-o", "max_tokens=1", "--json", "Hello",
                               home=home).stdout_text)
    assert flagged["usage"]["completion_tokens"] == 2
    assert flagged["usage"]["prompt_tokens"] == brief["usage"]["prompt_tokens"] != answer["usage"]["prompt_tokens"]


def test_the_models_pane_marks_a_named_model_shows_it_and_removes_only_the_name(tmp_path):
    import asyncio

    from helpers.tui_helpers import on_screen, wait_until
    from test_tui_models import ModelsApp, rows, select_installed, shown, status
    from textual.widgets import DataTable

    from localllm.tui.dialogs import Confirm
    from localllm.tui.models import ModelsPane

    settings = settings_for(tmp_path)
    write_named(settings.paths, NamedModel("pirate", PACKAGED, str(BUNDLED_MODEL), "You are a pirate.",
                                           {"temperature": 0.2, "stop": ("###",)}))

    async def session():
        app = ModelsApp(settings)
        async with app.run_test(size=(160, 40)) as pilot:
            pane = app.query_one(ModelsPane)
            await select_installed(pilot, pane, "named")
            table = pane.query_one("#installed", DataTable)
            assert [row[0] for row in rows(table) if row[5].startswith("named, on smollm2-135m")] == ["pirate"]
            metadata = " ".join(shown(pane.query_one("#metadata")).split())
            assert "built on smollm2-135m" in metadata and "You are a pirate." in metadata
            assert "temperature=0.2 stop='###'" in metadata
            await pilot.press("d")
            await wait_until(pilot, lambda: on_screen(app, Confirm))
            assert "Remove the name pirate?" in shown(app.screen.query_one("#confirm-question"))
            await pilot.press("y")
            await wait_until(pilot, lambda: not any(row[0] == "pirate" for row in rows(table)))
            assert "removed the name pirate" in status(pane)

    asyncio.run(session())
    assert read_named(settings.paths, "pirate") is None and BUNDLED_MODEL.is_file()
