"""ament's copyright linter, as ament_python packages ship it (runs where ament_copyright is installed: colcon test)."""

import pytest

ament = pytest.importorskip(
    "ament_copyright.main", reason="ament_copyright is not installed (ROS 2 apt package; not on PyPI)"
)


@pytest.mark.copyright
@pytest.mark.linter
def test_copyright():
    rc = ament.main(argv=[".", "test"])
    assert rc == 0, "found copyright errors"
