"""The wheel a user installs carries models.toml, so catalog lookups work outside a source checkout; the shell
completions parse in bash, zsh and fish; the packaging/ files pass their own checkers where those run here."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_models_toml_and_the_entry_point(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("localllm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "localllm/models.toml" in names
        assert archive.read("localllm/models.toml") == (ROOT / "models.toml").read_bytes()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "localllm = localllm.cli:main" in archive.read(entry_points).decode()


PACKAGING = ROOT / "packaging"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "localllm", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("shell,check", [("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]),
                                         ("fish", ["fish", "--no-execute"])])
def test_each_shells_completion_script_parses(tmp_path, shell, check):
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed here (Debian: apt install {check[0]})")
    script = tmp_path / f"localllm.{shell}"
    done = cli("completions", shell)
    assert done.returncode == 0 and "localllm" in done.stdout
    script.write_text(done.stdout)
    parsed = subprocess.run([*check, str(script)], capture_output=True, text=True, timeout=30)
    assert parsed.returncode == 0, parsed.stderr


def test_completions_come_from_the_parser_and_the_installed_models(tmp_path):
    def complete(line: str) -> list[str]:
        out = tmp_path / "out"
        cli(env={"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)), "LOCALLLM_HOME": str(tmp_path),
                 "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"})
        return out.read_text().split()

    assert {"serve", "segment", "sentiment"} <= set(complete("localllm se"))
    assert "--tool-choice" in complete("localllm run --tool-")
    assert complete("localllm run -m smollm2") == ["smollm2-135m"]  # the bundled model, found on disk


def test_the_desktop_entry_the_formula_the_unit_and_the_container_files(tmp_path):
    import configparser

    entry = PACKAGING / "linux" / "localllm.desktop"
    if shutil.which("desktop-file-validate"):
        done = subprocess.run(["desktop-file-validate", str(entry)], capture_output=True, text=True)
        assert done.returncode == 0 and not done.stdout.strip(), done.stdout
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.read(entry)
    assert desktop["Desktop Entry"]["Exec"] == "localllm" and desktop["Desktop Entry"]["Terminal"] == "true"
    import xml.etree.ElementTree as ElementTree

    assert ElementTree.parse(PACKAGING / "linux" / "localllm.svg").getroot().tag.endswith("svg")
    formula = PACKAGING / "homebrew" / "localllm.rb"
    if shutil.which("ruby"):
        done = subprocess.run(["ruby", "-c", str(formula)], capture_output=True, text=True)
        assert done.returncode == 0 and "Syntax OK" in done.stdout, done.stderr
    assert '"completions"' in formula.read_text()
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.read(PACKAGING / "systemd" / "localllm-serve.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    assert "localllm serve --host 127.0.0.1" in unit["Service"]["ExecStart"]
    instructions = {"FROM", "RUN", "WORKDIR", "COPY", "ENV", "VOLUME", "EXPOSE", "CMD", "ARG", "LABEL", "USER"}
    for name in ("Containerfile", "Containerfile.cuda"):
        lines = (PACKAGING / "container" / name).read_text().splitlines()
        continued = False
        for line in lines:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if not continued:
                assert stripped.split()[0] in instructions, f"{name}: {line!r}"
            continued = stripped.endswith("\\")
        cmd = next(line for line in lines if line.startswith("CMD"))
        assert json.loads(cmd[4:])[:2] == ["localllm", "serve"]
