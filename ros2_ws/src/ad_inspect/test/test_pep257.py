"""ament's pep257 linter, as ament_python packages ship it (runs where ament_pep257 is installed: colcon test)."""

import pytest

ament = pytest.importorskip(
    "ament_pep257.main", reason="ament_pep257 is not installed (ROS 2 apt package; not on PyPI)"
)


@pytest.mark.pep257
@pytest.mark.linter
def test_pep257():
    rc = ament.main(argv=[".", "test"])
    assert rc == 0, "found pep257 errors"
