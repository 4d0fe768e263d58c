"""ament's flake8 linter, as ament_python packages ship it (runs where ament_flake8 is installed: colcon test)."""

import pytest

ament = pytest.importorskip(
    "ament_flake8.main", reason="ament_flake8 is not installed (ROS 2 apt package; not on PyPI)"
)


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    rc, errors = ament.main_with_errors(argv=[])
    assert rc == 0, f"found {len(errors)} flake8 errors: {errors[:5]}"
