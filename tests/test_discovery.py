"""Models from other tools, found in temp folders laid out exactly as each tool lays them out, used in place."""

import hashlib
import json
import os
import shutil

import pytest
from conftest import run_cli


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def place(source, target):
    """A file of the tool's own (a hard link where the file system allows, else a copy), not a symlink to the
    bundled model: the store lists one entry per distinct file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


@pytest.fixture
def other_tools(tmp_path, bundled_model):
    """A home folder holding the bundled model as Ollama, LM Studio, GPT4All and the HF cache would store it."""
    home = tmp_path / "user"
    digest = sha256(bundled_model)
    ollama = home / ".ollama" / "models"
    blob = place(bundled_model, ollama / "blobs" / f"sha256-{digest}")
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "smollm" / "135m"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "0" * 64,
                   "size": 485},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
             "size": bundled_model.stat().st_size},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "1" * 64, "size": 10},
        ]}))
    lmstudio = place(bundled_model, home / ".lmstudio" / "models" / "lmstudio-community" / "SmolLM2-GGUF"
                     / "SmolLM2-LMS-Q4_1.gguf")
    gpt4all = place(bundled_model, home / ".local" / "share" / "nomic.ai" / "GPT4All" / "smollm2-gpt4all.gguf")
    hf_repo = home / ".cache" / "huggingface" / "hub" / "models--HuggingFaceTB--SmolLM2-GGUF"
    hf_blob = place(bundled_model, hf_repo / "blobs" / digest)
    snapshot = hf_repo / "snapshots" / ("a" * 40) / "smollm2-hf.gguf"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(hf_blob, snapshot.parent))
    env = {"HOME": str(home), "OLLAMA_MODELS": "", "HF_HOME": "", "HF_HUB_CACHE": "", "XDG_DATA_HOME": ""}
    return {"env": env, "blob": blob, "lmstudio": lmstudio, "gpt4all": gpt4all, "hf": snapshot}


def test_list_shows_every_tool_with_where_it_lives(home, other_tools):
    rows = json.loads(run_cli("list", "--json", home=home, env=other_tools["env"]).stdout_text)
    by_name = {row["name"]: row for row in rows}
    assert by_name["ollama/smollm:135m"]["where"] == "Ollama"
    assert by_name["ollama/smollm:135m"]["path"] == str(other_tools["blob"])
    assert by_name["lmstudio/smollm2-lms-q4_1"]["where"] == "LM Studio"
    assert by_name["gpt4all/smollm2-gpt4all"]["where"] == "GPT4All"
    assert by_name["hf/huggingfacetb/smollm2-gguf/smollm2-hf"]["where"] == "Hugging Face cache"
    assert all(by_name[name]["quant"] == "Q4_1" for name in by_name)


def test_discovered_models_run_in_place_and_are_never_deleted(home, other_tools):
    before = sha256(other_tools["blob"])
    done = run_cli("run", "-m", "ollama/smollm:135m", "--preset", "precise", "-o", "max_tokens=4", "-v", "Hi",
                   home=home, env=other_tools["env"])
    assert done.returncode == 0, done.stderr_text
    for name in ("ollama/smollm:135m", "lmstudio/smollm2-lms-q4_1", "gpt4all/smollm2-gpt4all"):
        refused = run_cli("rm", name, "-y", home=home, env=other_tools["env"])
        assert refused.returncode == 1 and "never deletes another tool's files" in refused.stderr_text
    assert sha256(other_tools["blob"]) == before
    assert other_tools["lmstudio"].exists() and other_tools["gpt4all"].exists() and other_tools["hf"].exists()
    assert not (home / "data" / "models").exists()  # zero-copy: nothing was copied into localllm's folder


def test_discovery_can_be_turned_off(home, other_tools):
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("discover = false\n")
    rows = json.loads(run_cli("list", "--json", home=home, env=other_tools["env"]).stdout_text)
    assert [row["name"] for row in rows] == ["smollm2-135m"]


def test_catalog_verdicts_match_the_planner(home):
    from conftest import settings_for

    from localllm.hardware.detect import detect_hardware
    from localllm.store.catalog import estimated_info, load_catalog
    from localllm.tasks.loading import plan_for

    rows = json.loads(run_cli("catalog", "--json", home=home).stdout_text)
    catalog = load_catalog()
    assert len(catalog) >= 15 and len(rows) == sum(len(m.quants) for m in catalog)
    assert {m.parameters for m in catalog} >= {0.135, 70.55}
    report = detect_hardware()
    settings = settings_for(home)
    for row in rows:
        model = next(m for m in catalog if m.name == row["name"])
        plan = plan_for(settings, estimated_info(model, model.quant(row["quant"])), report)
        assert row["verdict"] == plan.verdict and row["fits"] == plan.fits
        # The estimate follows the threads the planner picks, and those follow the machine's load at that moment
        # (the command ran a moment earlier): an estimate exists for the same rows, its value may differ.
        assert (row["decode_tokens_per_s"] is None) == (plan.to_dict()["decode_tokens_per_s"] is None)
    fitting = json.loads(run_cli("catalog", "--fits", "--json", home=home).stdout_text)
    assert fitting and all(row["fits"] for row in fitting)
    code = json.loads(run_cli("catalog", "--use", "code", "--json", home=home).stdout_text)
    assert code and all("code" in row["uses"] for row in code)
    installed = [row for row in rows if row["installed"]]
    assert [(r["name"], r["quant"]) for r in installed] == [("smollm2-135m", "Q4_1")]


def test_catalog_estimate_agrees_with_the_real_header(bundled_model):
    from localllm.hardware.detect import detect_hardware
    from localllm.hardware.planner import PlanRequest, plan_load
    from localllm.store.catalog import estimated_info, find_model, load_catalog
    from localllm.store.gguf_info import read_model_info

    entry = find_model("smollm2-135m", load_catalog())
    report = detect_hardware()
    estimated = plan_load(report, estimated_info(entry, entry.quant("Q4_1")), PlanRequest(ctx=2048))
    real = plan_load(report, read_model_info(bundled_model), PlanRequest(ctx=2048))
    assert estimated.verdict == real.verdict
    assert abs(estimated.memory.total - real.memory.total) / real.memory.total < 0.1
