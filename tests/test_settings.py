import pytest

from localllm.core.errors import ConfigError
from localllm.core.settings import Paths, Settings


def test_localllm_home_moves_every_path(tmp_path):
    paths = Paths.from_environment({"LOCALLLM_HOME": str(tmp_path)})
    for folder in (paths.data_dir, paths.config_dir, paths.cache_dir):
        assert tmp_path in folder.parents
    assert paths.config_file == tmp_path / "config" / "config.toml"


def write_config(tmp_path, text):
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "config.toml").write_text(text)


def test_config_file_then_environment(tmp_path):
    write_config(tmp_path, 'model = "a"\nctx = 4096\nmodel_dirs = ["/models"]\n')
    settings = Settings.load({"LOCALLLM_HOME": str(tmp_path), "LOCALLLM_CTX": "2048"})
    assert settings.model == "a"
    assert settings.ctx == 2048
    assert settings.model_dirs == ("/models",)


def test_syntax_error_names_file_and_line(tmp_path):
    write_config(tmp_path, 'model = "a"\nctx = = 3\n')
    with pytest.raises(ConfigError) as err:
        Settings.load({"LOCALLLM_HOME": str(tmp_path)})
    assert "config.toml" in err.value.message and "line 2" in err.value.message


@pytest.mark.parametrize("text, fragment", [
    ('modle = "x"\n', "did you mean 'model'"),
    ('ctx = "big"\n', "ctx must be a whole number, got 'big'"),
    ("ctx = 3.7\n", "ctx must be a whole number, got 3.7"),
    ("ctx = true\n", "ctx must be a whole number, got True"),
    ("threads = 1.5\n", "threads must be a whole number, got 1.5"),
    ("threads = inf\n", "threads must be a whole number, got inf"),
    ("threads = false\n", "threads must be a whole number, got False"),
    ("threads = 1000000\n", "threads = 1000000 is more than 1024"),
    ("ctx = -5\n", "must be positive"),
    ("model = 3\n", "model must be a string"),
])
def test_wrong_values_are_reported(tmp_path, text, fragment):
    write_config(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        Settings.load({"LOCALLLM_HOME": str(tmp_path)})
    assert fragment in f"{err.value.message} {err.value.hint}"
