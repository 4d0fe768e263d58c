"""What the ROS 2 node tests share: a listener on the node's outputs, a camera process, frames, the node itself."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Vector3Stamped
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import String

PUBLISHER = Path(__file__).parent / "publisher.py"
CAT = "Sample_brick"
TOPIC = "/test_cam/image_raw"
WAIT = 120


class Listener:
    """Collects the node's outputs by frame_id, and its status and diagnostics."""

    def __init__(self) -> None:
        self.node = rclpy.create_node(f"listener_{os.getpid()}")
        self.results: dict[str, Vector3Stamped] = {}
        self.maps: dict[str, Image] = {}
        self.overlays: dict[str, Image] = {}
        self.status: list[dict] = []
        self.diagnostics: list[dict] = []
        n = self.node
        n.create_subscription(
            Vector3Stamped, "/anomaly/result", lambda m: self.results.__setitem__(m.header.frame_id, m), 50
        )
        n.create_subscription(Image, "/anomaly/map", lambda m: self.maps.__setitem__(m.header.frame_id, m), 50)
        n.create_subscription(Image, "/anomaly/overlay", lambda m: self.overlays.__setitem__(m.header.frame_id, m), 50)
        n.create_subscription(String, "/ad_inspect/status", lambda m: self.status.append(json.loads(m.data)), 50)
        n.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.append({kv.key: kv.value for kv in m.status[0].values}),
            10,
        )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def call(self, service: str, srv_type, request, timeout: float = WAIT):
        client = self.node.create_client(srv_type, service)
        assert client.wait_for_service(timeout_sec=timeout), f"{service} not offered"
        future = client.call_async(request)
        deadline = time.time() + timeout
        while not future.done() and time.time() < deadline:
            time.sleep(0.05)
        assert future.done(), f"{service} did not answer"
        return future.result()

    def set_param(self, name: str, value):
        if isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        req = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
        return self.call("/ad_inspect/set_parameters", SetParameters, req).results[0]

    def wait(self, predicate, timeout: float = WAIT, what: str = "condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


def publish(plan: list[dict], tmp_path: Path) -> None:
    """Publish ``plan``'s frames from a camera process of its own (tests/ros/publisher.py)."""
    plan_file = tmp_path / f"plan_{random.randrange(1 << 30)}.json"
    plan_file.write_text(json.dumps(plan))
    proc = subprocess.run(
        [sys.executable, str(PUBLISHER), TOPIC, str(plan_file)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def frames(data: Path, n: int = 5) -> list[dict]:
    test = data / "test" / CAT
    normal = sorted((test / "normal").glob("*.png"))[:n]
    anomaly = sorted((test / "anomaly").glob("*.png"))[:n]
    encodings = ["rgb8", "bgr8", "rgb8", "mono8", "rgb8"]
    return [
        {"file": str(p), "frame_id": f"{kind}_{i}", "encoding": encodings[i % len(encodings)]}
        for kind, paths in (("normal", normal), ("anomaly", anomaly))
        for i, p in enumerate(paths)
    ]


def start_node(log_path: Path, **params) -> subprocess.Popen:
    """The node in its own process, started through its entry point with ``-p name:=value`` parameters."""
    args = [sys.executable, "-m", "ad_inspect.inspection_node", "--ros-args"]
    for name, value in {"image_topic": TOPIC, **params}.items():
        args += ["-p", f"{name}:={value}"]
    log = open(log_path, "w")  # noqa: SIM115 - the process owns it until it ends
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def new_domain() -> None:
    """A ROS domain of its own for this module's graph (tests run one module at a time)."""
    os.environ["ROS_DOMAIN_ID"] = str(random.randrange(1, 100))


@contextlib.contextmanager
def listening(node: subprocess.Popen):
    """A listener on ``node``'s graph once it publishes diagnostics; the node is stopped at the end."""
    rclpy.init()
    listener = Listener()
    try:
        listener.wait(lambda: listener.diagnostics, what="the node's first diagnostics")
        yield listener
    finally:
        node.terminate()
        node.wait(30)
        listener.executor.shutdown()
        listener.node.destroy_node()
        rclpy.shutdown()
