"""The wheel a user installs carries models.toml, so catalog lookups work outside a source checkout."""

import subprocess
import sys
import zipfile
from pathlib import Path

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
