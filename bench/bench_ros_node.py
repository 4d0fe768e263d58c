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

    def wait_for(self, frame_id: str, timeout: float = 10) -> float | None:
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
        stdout=open(work / "node.log", "w"),  # noqa: SIM115 - the node's lifetime
        stderr=subprocess.STDOUT,
    )
    rclpy.init()
    bench = Bench()
    try:
        deadline = time.time() + 60
        while bench.pub.get_subscription_count() == 0 and time.time() < deadline:
            time.sleep(0.1)
        for i, rgb in enumerate(frames[:5]):  # warm up the node
            bench.send(rgb, f"warm_{i}")
            if bench.wait_for(f"warm_{i}") is None:
                raise SystemExit(f"no result for a warm-up frame; node log: {work / 'node.log'}")
        paced = []
        for i, rgb in enumerate(frames):
            bench.send(rgb, f"paced_{i}")
            lat = bench.wait_for(f"paced_{i}")
            if lat is not None:
                paced.append(lat)
            time.sleep(0.05)

        # sustained load: frames at the node's paced rate (1x), then at twice it (2x overload)
        capacity = 1000.0 / statistics.median(paced)
        phases = {}
        for factor in (1, 2):
            period = 1.0 / (factor * capacity)
            rss_before = rss_mib(node.pid)
            start, sent = time.perf_counter(), []
            while time.perf_counter() - start < args.seconds:
                key = f"x{factor}_{len(sent)}"
                bench.send(frames[len(sent) % len(frames)], key)
                sent.append(key)
                time.sleep(max(0.0, start + len(sent) * period - time.perf_counter()))
            time.sleep(1.0)
            lat = [(bench.received[k] - bench.sent[k]) * 1000 for k in sent if k in bench.received]
            phases[factor] = {
                "rate_hz": factor * capacity,
                "sent": len(sent),
                "scored": len(lat),
                "scored_per_s": len(lat) / args.seconds,
                "dropped_share": 1 - len(lat) / len(sent),
                "latency_ms_median": statistics.median(lat) if lat else None,
                "latency_ms_p95": float(np.percentile(lat, 95)) if lat else None,
                "rss_mib_before": rss_before,
                "rss_mib_after": rss_mib(node.pid),
            }
    finally:
        node.terminate()
        node.wait(30)
        bench.executor.shutdown()
        rclpy.shutdown()

    med_direct, med_node = statistics.median(direct), statistics.median(paced)
    result = {
        "model": args.model,
        "frame": "640x480 rgb8",
        "dds": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "default"),
        "direct_ms_median": med_direct,
        "node_ms_median": med_node,
        "node_ms_p95": float(np.percentile(paced, 95)),
        "overhead": med_node / med_direct - 1,
        "load": phases,
    }
    print(
        f"model {args.model}, 640x480 rgb8 frames, median of {len(paced)} paced frames, DDS transports {result['dds']}"
    )
    print(f"  direct runtime call            {med_direct:7.1f} ms")
    print(
        f"  node: publish -> result        {med_node:7.1f} ms   overhead {result['overhead']:+.1%}  (target <= +10 %)"
    )
    for factor, ph in phases.items():
        print(
            f"  {factor}x load ({ph['rate_hz']:.0f} Hz, {ph['sent']} sent): {ph['scored_per_s']:.1f} scored/s, "
            f"{ph['dropped_share']:.0%} dropped, latency median {ph['latency_ms_median']:.1f} ms, "
            f"p95 {ph['latency_ms_p95']:.1f} ms; node memory {ph['rss_mib_before']:.0f} -> {ph['rss_mib_after']:.0f} MiB"
        )
    out = Path(__file__).parent / "results" / "ros_node.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
