#!/usr/bin/env bash
# Source ROS 2 Humble and the ad_inspect workspace, then run the command (the node by default).
set -e
source /opt/ros/humble/setup.bash
source /opt/ros_ws/install/setup.bash
exec "$@"
