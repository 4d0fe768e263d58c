"""A separate process that publishes camera frames for the node tests.

Usage: python publisher.py TOPIC PLAN.json — PLAN is a list of frames:
{"file": path, "encoding": "rgb8"|"bgr8"|"mono8"|..., "frame_id": str, "defect": null|"step"|"truncated"|"encoding",
 "compressed": false, "pause": seconds after publishing}.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from PIL import Image as PILImage
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ad_core.data.images import read_image


def frame(item: dict, stamp) -> Image | CompressedImage:
    rgb = read_image(item["file"])
    if item.get("compressed"):
        msg = CompressedImage()
        buf = io.BytesIO()
        PILImage.fromarray(rgb).save(buf, format="PNG")
        msg.format, msg.data = "png", buf.getvalue()
    else:
        enc = item.get("encoding", "rgb8")
        arr = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb.mean(axis=2).astype(np.uint8)}[enc]
        msg = Image()
        msg.height, msg.width, msg.encoding = arr.shape[0], arr.shape[1], enc
        msg.step = arr.shape[1] * (3 if arr.ndim == 3 else 1)
        msg.data = np.ascontiguousarray(arr).tobytes()
        defect = item.get("defect")
        if defect == "step":
            msg.step = 7
        elif defect == "truncated":
            msg.data = msg.data[: len(msg.data) // 3]
        elif defect == "encoding":
            msg.encoding = "32FC1"
    msg.header.stamp = stamp
    msg.header.frame_id = item["frame_id"]
    return msg


def main() -> None:
    topic, plan_file = sys.argv[1], sys.argv[2]
    plan = json.loads(Path(plan_file).read_text())
    rclpy.init()
    node = rclpy.create_node("test_camera")
    compressed = any(item.get("compressed") for item in plan)
    pub = node.create_publisher(CompressedImage if compressed else Image, topic, qos_profile_sensor_data)
    deadline = time.time() + 30
    while pub.get_subscription_count() == 0 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    for item in plan:
        pub.publish(frame(item, node.get_clock().now().to_msg()))
        time.sleep(item.get("pause", 0.4))
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
