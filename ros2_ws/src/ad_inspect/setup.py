"""ament_python package ad_inspect (colcon build in a ROS 2 workspace, or pip install for tests)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ad_inspect"

setup(
    name=f"{PACKAGE}_ros",  # the pip distribution; "ad_inspect" would collide with the ad-inspect project
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ad-inspect team",
    maintainer_email="team@ad-inspect.dev",
    description="Inspection node publishing /anomaly/score and maps; retrain / convert services",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"inspection_node = {PACKAGE}.inspection_node:main"]},
)
