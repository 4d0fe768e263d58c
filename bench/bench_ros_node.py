"""ROS 2 node overhead: publish -> /anomaly/result received, against direct runtime calls, at 640x480.

One run, same model, same frames:

* ``direct``: ``ad_core.runtime.open_scorer(run)([rgb])`` in this process, one frame at a time;
* ``node``: the inspection node in its own process (its entry point, real DDS); this process
  publishes ``sensor_msgs/Image`` rgb8 frames and times until the frame's ``/anomaly/result``
  (same header) arrives. Frames are paced so the node is idle when each one arrives;
* ``throughput``: frames published back to back for a while; frames scored per second;
* ``overload``: frames published at twice the measured throughput; the node must drop frames
  rather than queue them (latency of scored frames stays bounded) and its memory must not grow.

Maps and overlays are published too (the node's defaults), after the result.

Usage: ``python bench/bench_ros_node.py [--model padim] [--n 40] [--seconds 15]``
Prints a table with ratios and writes ``bench/results/ros_node.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import Vector3Stamped
from PIL import Image as PILImage
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ad_core import train
from ad_core.data.images import read_image
from ad_core.data.sample import build_sample_dataset
from ad_core.runtime import open_scorer

TOPIC = "/bench_cam/image_raw"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def to_msg(rgb: np.ndarray, frame_id: str, stamp) -> Image:
    msg = Image()
    msg.header.frame_id, msg.header.stamp = frame_id, stamp
    msg.height, msg.width, msg.encoding, msg.step = rgb.shape[0], rgb.shape[1], "rgb8", rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg


class Bench:
    def __init__(self) -> None:
        self.node = rclpy.create_node("bench_camera")
        self.pub = self.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
        self.sent: dict[str, float] = {}
        self.received: dict[str, float] = {}
        self.node.create_subscription(Vector3Stamped, "/anomaly/result", self._on_result, 100)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_result(self, msg: Vector3Stamped) -> None:
        self.received[msg.header.frame_id] = time.perf_counter()

    def send(self, rgb: np.ndarray, frame_id: str) -> None:
        msg = to_msg(rgb, frame_id, self.node.get_clock().now().to_msg())
        self.sent[frame_id] = time.perf_counter()
        self.pub.publish(msg)

    def wait_for(self, frame_id: str, timeout: float = 30) -> float | None:
        deadline = time.time() + timeout
        while frame_id not in self.received and time.time() < deadline:
            time.sleep(0.0005)
        return (self.received[frame_id] - self.sent[frame_id]) * 1000 if frame_id in self.received else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="padim")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_ros_"))
    build_sample_dataset(work / "data")
    run = train(args.model, "Sample_brick", work / "data", work / "models", image_size=256, progress=False)
    frames = [
        np.asarray(PILImage.fromarray(read_image(p)).resize((640, 480), PILImage.BILINEAR))
        for p in sorted((work / "data" / "test" / "Sample_brick").glob("*/*.png"))[: args.n]
    ]

    scorer = open_scorer(run)
    for rgb in frames[:5]:
        scorer([rgb])
    direct = []
    for rgb in frames:
        t0 = time.perf_counter()
        scorer([rgb])
        direct.append((time.perf_counter() - t0) * 1000)

    os.environ["ROS_DOMAIN_ID"] = str(random.randrange(100, 200))
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ad_inspect.inspection_node",
            "--ros-args",
            "-p",
            f"model_path:={run}",
            "-p",
            f"image_topic:={TOPIC}",
            "-p",
            f"models_root:={work / 'models'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rclpy.init()
    bench = Bench()
    try:
        deadline = time.time() + 60
        while bench.pub.get_subscription_count() == 0 and time.time() < deadline:
            time.sleep(0.1)
        for i, rgb in enumerate(frames[:5]):  # warm up the node
            bench.send(rgb, f"warm_{i}")
            bench.wait_for(f"warm_{i}")
        paced = []
        for i, rgb in enumerate(frames):
            bench.send(rgb, f"paced_{i}")
            lat = bench.wait_for(f"paced_{i}")
            if lat is not None:
                paced.append(lat)
            time.sleep(0.05)

        # throughput: back to back for args.seconds
        start, i = time.perf_counter(), 0
        received_before = len(bench.received)
        while time.perf_counter() - start < args.seconds:
            bench.send(frames[i % len(frames)], f"tp_{i}")
            i += 1
            time.sleep(0.001)
        time.sleep(1.0)
        scored_tp = len(bench.received) - received_before
        fps = scored_tp / args.seconds

        # overload: twice the throughput
        rss_before = rss_mib(node.pid)
        period = 1.0 / (2 * fps)
        start, j = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            bench.send(frames[j % len(frames)], f"ov_{j}")
            j += 1
            time.sleep(max(0.0, start + j * period - time.perf_counter()))
        time.sleep(1.0)
        rss_after = rss_mib(node.pid)
        over = [
            (bench.received[k] - bench.sent[k]) * 1000
            for k in bench.sent
            if k.startswith("ov_") and k in bench.received
        ]
    finally:
        node.terminate()
        node.wait(30)
        bench.executor.shutdown()
        rclpy.shutdown()

    med_direct, med_node = statistics.median(direct), statistics.median(paced)
    result = {
        "model": args.model,
        "frame": "640x480 rgb8",
        "direct_ms_median": med_direct,
        "node_ms_median": med_node,
        "node_ms_p95": float(np.percentile(paced, 95)),
        "overhead": med_node / med_direct - 1,
        "throughput_fps": fps,
        "overload_sent": j,
        "overload_scored": len(over),
        "overload_dropped_share": 1 - len(over) / max(1, j),
        "overload_latency_ms_median": statistics.median(over) if over else None,
        "overload_latency_ms_p95": float(np.percentile(over, 95)) if over else None,
        "node_rss_mib_before_overload": rss_before,
        "node_rss_mib_after_overload": rss_after,
    }
    print(f"model {args.model}, 640x480 frames, median of {len(paced)} paced frames")
    print(f"  direct runtime call            {med_direct:7.1f} ms")
    print(
        f"  node: publish -> result        {med_node:7.1f} ms   overhead {result['overhead']:+.1%}  (target <= +10 %)"
    )
    print(f"  throughput                     {fps:7.1f} frames/s")
    print(
        f"  2x overload ({j} sent)          {len(over)} scored, {result['overload_dropped_share']:.0%} dropped; "
        f"latency median {result['overload_latency_ms_median']:.1f} ms, p95 {result['overload_latency_ms_p95']:.1f} ms"
    )
    print(f"  node memory                    {rss_before:.0f} MiB before overload, {rss_after:.0f} MiB after")
    out = Path(__file__).parent / "results" / "ros_node.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
