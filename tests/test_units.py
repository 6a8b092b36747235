"""The one size formatter everything shown to people goes through: binary units, named as such, three digits."""

import pytest

from localllm.core.units import human_size, parameter_count

KIB, MIB, GIB = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(("count", "shown"), [
    (0, "0 B"), (1, "1 B"), (999, "999 B"), (1000, "0.98 KiB"), (1024, "1.00 KiB"), (1536, "1.50 KiB"),
    (int(98.4 * MIB), "98.4 MiB"), (512 * MIB, "512 MiB"), (int(1.234 * GIB), "1.23 GiB"),
    (12 * GIB, "12.0 GiB"), (140 * GIB, "140 GiB"), (3 * 1024 * GIB, "3.00 TiB"), (2.5 * MIB, "2.50 MiB"),
    # four digits are the next unit's (no "1007 MiB", no "1024 MiB"); a digit more never shows as "10.00"
    (1007 * MIB, "0.98 GiB"), (int(999.4 * MIB), "999 MiB"), (GIB - 1, "1.00 GiB"), (int(9.999 * MIB), "10.0 MiB"),
    (int(99.99 * MIB), "100 MiB"),
])
def test_human_size(count, shown):
    assert human_size(count) == shown


def test_bundled_model_and_a_pull_speed_read_the_same_way():
    """A model's size and a download's speed in the same unit (they were "0.09 GiB" and "98.4 MB")."""
    assert human_size(96_576_768) == "92.1 MiB"
    assert human_size(15_000_000) + "/s" == "14.3 MiB/s"


@pytest.mark.parametrize(("count", "label", "shown"), [
    (134_515_008, None, "135M"), (134_515_008, "135M", "135M"), (0.135e9, None, "135M"), (1.5e9, None, "1.5B"),
    (1_543_714_304, None, "1.54B"), (7e9, None, "7B"), (7_615_616_512, "7B", "7.62B (7B)"),
    (46_702_792_704, "8x7B", "46.7B (8x7B)"), (999_600_000, None, "1B"), (70_553_706_496, None, "70.6B"),
    (12_345, None, "12.3K"), (500, None, "500"),
])
def test_parameter_counts_are_written_one_way(count, label, shown):
    """The CLI's show and catalog and the app's models pane write them so: three significant digits at most (134.5M,
    0.13 B and 0.135B were three ways of writing one model)."""
    assert parameter_count(count, label) == shown
