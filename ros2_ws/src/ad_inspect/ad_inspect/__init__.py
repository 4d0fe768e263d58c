"""ROS 2 wrapper of ad-inspect: the inspection node and its services (see README.md)."""
