"""One subscription served on one thread without an executor.

rclpy's executors rebuild their wait set in Python on every wake-up (all nodes, callback groups,
tasks, timers, guard conditions) and then run the callback as a task. For a camera thread that
waits on nothing but one image subscription that costs about 0.5 ms per frame (a 900 KB echo
round trip between two processes: 2.7-3.0 ms with a ``SingleThreadedExecutor`` on the echo side,
2.2-2.3 ms with this loop). The loop keeps one wait set with the subscription and a guard
condition (to stop it), waits, takes the message and calls the subscription's callback on the same thread.

It uses the calls rclpy's own executors make (``WaitSet``, ``take_message``), present in Humble
and newer; where one is missing it falls back to spinning a ``SingleThreadedExecutor``.
"""

from __future__ import annotations

import contextlib
import threading

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.subscription import Subscription

_WAKE_NS = 500_000_000  # at the latest, the loop looks at its stop flag twice a second


class SubscriptionLoop:
    """Serve ``subscription`` (created on ``node``, which no executor spins) on the calling thread."""

    def __init__(self, node: Node, subscription: Subscription) -> None:
        self._node = node
        self._sub = subscription
        self._stopping = threading.Event()
        self._wake = node.create_guard_condition(lambda: None)
        self._executor: SingleThreadedExecutor | None = None
        self.mode = "wait set"

    @classmethod
    def on_topic(cls, parent: Node, msg_type, topic: str, callback, qos) -> SubscriptionLoop:
        """A raw subscription to ``topic`` on a helper node ``<parent>_camera`` that only this loop serves."""
        node = rclpy.create_node(
            f"{parent.get_name()}_camera",
            namespace=parent.get_namespace(),
            context=parent.context,
            start_parameter_services=False,
        )
        return cls(node, node.create_subscription(msg_type, topic, callback, qos, raw=True))

    @property
    def node(self) -> Node:
        """The helper node the subscription lives on (destroy it after ``stop``)."""
        return self._node

    def run(self) -> None:
        """Wait for messages and call the subscription's callback with each, until ``stop`` or the context's shutdown."""
        ctx = self._node.context
        try:
            with ctx.handle:
                wait_set = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, ctx.handle)
        except (AttributeError, TypeError):  # an rclpy without these calls
            self._spin_executor()
            return
        sub, wake = self._sub, self._wake
        while not self._stopping.is_set() and ctx.ok():
            try:
                with ctx.handle, sub.handle, wake.handle:
                    wait_set.clear_entities()
                    wait_set.add_subscription(sub.handle)
                    wait_set.add_guard_condition(wake.handle)
                    wait_set.wait(_WAKE_NS)
                    if self._stopping.is_set() or not ctx.ok():
                        return
                    taken = sub.handle.take_message(sub.msg_type, sub.raw)
            except Exception:  # handles destroyed under us: the node is going away
                if self._stopping.is_set() or not ctx.ok():
                    return
                raise
            if taken is not None:
                sub.callback(taken[0])

    def newest(self, raw: bytes) -> tuple[bytes, int]:
        """``raw``, or the newest frame that has arrived since, and how many were passed over."""
        sub, passed = self._sub, 0
        while True:
            try:
                with sub.handle:
                    newer = sub.handle.take_message(sub.msg_type, sub.raw)  # what rclpy's executors call
            except Exception:  # an rclpy without it: the subscription's queue still bounds staleness
                return raw, passed
            if newer is None:
                return raw, passed
            raw, passed = newer[0], passed + 1

    def _spin_executor(self) -> None:
        self.mode = "executor"
        self._executor = SingleThreadedExecutor(context=self._node.context)
        self._executor.add_node(self._node)
        if not self._stopping.is_set():
            with contextlib.suppress(Exception):  # ExternalShutdownException and kin: the context is going away
                self._executor.spin()

    def stop(self) -> None:
        """Make ``run`` return soon (at once when it is waiting)."""
        self._stopping.set()
        with contextlib.suppress(Exception):
            self._wake.trigger()
        if self._executor is not None:
            self._executor.shutdown()
