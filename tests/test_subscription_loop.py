"""The node's camera loop: one subscription served without an executor, and its executor fallback."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install ros-rclpy ...; make setup does)")

from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ad_core.data.ros_images import parse_image  # noqa: E402
from ad_inspect.subscription_loop import SubscriptionLoop  # noqa: E402


@pytest.fixture
def ctx():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def _serve(ctx, name: str):
    """A publisher node and a camera node whose raw Image subscription is served by a SubscriptionLoop."""
    got: list[tuple[str, int]] = []
    arrived = threading.Event()

    def on_frame(raw: bytes) -> None:
        msg = parse_image(raw)
        got.append((msg.header.frame_id, len(bytes(msg.data))))
        arrived.set()

    pub_node = rclpy.create_node(f"{name}_pub", context=ctx)
    cam = rclpy.create_node(f"{name}_cam", context=ctx)
    sub = cam.create_subscription(Image, f"/{name}/image", on_frame, qos_profile_sensor_data, raw=True)
    pub = pub_node.create_publisher(Image, f"/{name}/image", qos_profile_sensor_data)
    loop = SubscriptionLoop(cam, sub)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return pub, loop, thread, got, arrived, (pub_node, cam)


def _send_until_received(pub, arrived, frame_id: str) -> None:
    msg = Image(height=4, width=5, encoding="rgb8", step=15, data=bytes(range(60)))
    msg.header.frame_id = frame_id
    deadline = time.monotonic() + 30  # discovery between the two nodes takes a moment
    while time.monotonic() < deadline:
        arrived.clear()
        pub.publish(msg)
        if arrived.wait(0.2):
            return
    raise AssertionError(f"frame {frame_id} never reached the loop")


def _check(ctx, name: str, mode: str) -> None:
    pub, loop, thread, got, arrived, nodes = _serve(ctx, name)
    try:
        _send_until_received(pub, arrived, "first")
        _send_until_received(pub, arrived, "second")
        assert loop.mode == mode
        assert ("first", 60) in got and ("second", 60) in got
        loop.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "stop() did not end the loop"
    finally:
        loop.stop()
        for node in nodes:
            node.destroy_node()


def test_the_loop_hands_each_raw_frame_to_the_callback_and_stops(ctx):
    _check(ctx, "loop", "wait set")


def test_without_rclpy_wait_sets_it_falls_back_to_an_executor(ctx, monkeypatch):
    import types

    import ad_inspect.subscription_loop as module

    # an rclpy whose C extension has no WaitSet (rclpy's own executors keep theirs)
    monkeypatch.setattr(module, "_rclpy", types.SimpleNamespace())
    _check(ctx, "fallback", "executor")


def test_the_loop_ends_when_its_context_shuts_down():
    context = rclpy.Context()
    rclpy.init(context=context)
    thread = _serve(context, "shutdown")[2]
    time.sleep(0.2)  # let the loop reach its wait
    rclpy.shutdown(context=context)
    thread.join(timeout=10)
    assert not thread.is_alive(), "the loop outlived its context"
