"""The transport floor under the ROS node: a 640x480 rgb8 frame to another process and a result back.

An echo process subscribes (raw) to ``sensor_msgs/Image`` and answers each frame with a small
``geometry_msgs/Vector3Stamped``; this process publishes the frame and times until the answer
arrives. Each side is served either by rclpy's ``SingleThreadedExecutor`` (the peer: what a node
spins by default) or by the inspection node's ``SubscriptionLoop`` (one wait set, no executor).
The configurations take turns, ``--rounds`` times, on a fresh ROS domain each, so a slowdown of
the shared machine hits them alike. No model runs: what is left is DDS, rclpy and the wake-ups,
which is what the node adds around its model call at best (``bench_ros_node.py``).

Usage: ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA python bench/bench_ros_echo.py [--n 150] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Vector3Stamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from ad_inspect.subscription_loop import SubscriptionLoop

MODES = ("executor", "loop")


def _serve(node, subscription, mode: str) -> threading.Thread:
    if mode == "loop":
        target = SubscriptionLoop(node, subscription).run
    else:
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)

        def target() -> None:
            with contextlib.suppress(Exception):  # ExternalShutdownException when the round ends
                executor.spin()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def echo(mode: str) -> None:
    """The other process: answer every frame until killed."""
    rclpy.init()
    node = rclpy.create_node("bench_echo")
    pub = node.create_publisher(Vector3Stamped, "/bench_echo/answer", 10)

    def on_frame(raw: bytes) -> None:
        answer = Vector3Stamped()
        answer.vector.x = float(len(raw))
        pub.publish(answer)

    sub = node.create_subscription(Image, "/bench_echo/frame", on_frame, qos_profile_sensor_data, raw=True)
    _serve(node, sub, mode).join()


def round_trips(echo_mode: str, client_mode: str, n: int) -> list[float]:
    """Milliseconds from publishing a frame to its answer, ``n`` times (the first 10 dropped)."""
    os.environ["ROS_DOMAIN_ID"] = str(random.randrange(100, 200))  # this round's domain, for both processes
    proc = subprocess.Popen([sys.executable, __file__, "--echo", echo_mode])
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_echo_client", context=ctx)
    answered = threading.Event()
    sub = node.create_subscription(Vector3Stamped, "/bench_echo/answer", lambda m: answered.set(), 10)
    pub = node.create_publisher(Image, "/bench_echo/frame", qos_profile_sensor_data)
    _serve(node, sub, client_mode)
    frame = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    frame.data = np.random.default_rng(0).integers(0, 255, 480 * 640 * 3, dtype=np.uint8).tobytes()
    times: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while not answered.is_set() and time.monotonic() < deadline:  # until the two sides have matched
            pub.publish(frame)
            answered.wait(0.2)
        for _ in range(n + 10):
            answered.clear()
            t0 = time.perf_counter()
            pub.publish(frame)
            if answered.wait(2.0):
                times.append((time.perf_counter() - t0) * 1000.0)
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
        rclpy.shutdown(context=ctx)
    return times[10:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--echo", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        echo(args.echo)
        return
    configs = [("executor", "executor"), ("loop", "executor"), ("loop", "loop")]
    medians: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for c in configs:
            t = round_trips(*c, args.n)
            medians[c].append(statistics.median(t) if t else float("nan"))
            print(f"round {r + 1}: echo {c[0]:8s} client {c[1]:8s} median {medians[c][-1]:.2f} ms ({len(t)} answers)")
    base = statistics.median(medians[configs[0]])
    print("\n900 KB frame there, small answer back; medians of the rounds' medians:")
    for c in configs:
        m = statistics.median(medians[c])
        print(f"  echo {c[0]:8s} / client {c[1]:8s}: {m:5.2f} ms  (executor on both sides / this: {base / m:.2f}x)")


if __name__ == "__main__":
    main()
