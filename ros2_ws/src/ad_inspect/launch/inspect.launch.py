"""ros2 launch ad_inspect inspect.launch.py [model_path:=...] [image_topic:=...] [backend:=...]."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "ad_inspect"
EXECUTABLE = "inspection_node"
OVERRIDABLE = {
    "model_path": "bundle folder or engine (model.plan / model.onnx / model.pth)",
    "image_topic": "camera topic to inspect",
    "backend": "tensorrt | onnxruntime | torch | openvino",
}


def _node(context):
    """The node with the parameters file, plus the arguments given on the command line."""
    overrides = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDABLE}
    overrides = {name: value for name, value in overrides.items() if value}
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=PACKAGE,
            output="screen",
            parameters=[LaunchConfiguration("params_file").perform(context), overrides],
        )
    ]


def generate_launch_description():
    """Declare the arguments (params_file defaults to the package's config/params.yaml)."""
    params = os.path.join(get_package_share_directory(PACKAGE), "config", "params.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=params, description="parameters file"),
            *(DeclareLaunchArgument(name, default_value="", description=text) for name, text in OVERRIDABLE.items()),
            OpaqueFunction(function=_node),
        ]
    )
