"""ROS 2 inspection node: camera frames in, anomaly score, decision, map and overlay out.

Frames are scored on a camera thread of their own, which waits on the image subscription alone (a
helper node ``<name>_camera`` that no executor spins; ``SubscriptionLoop``): parameters, services
and diagnostics stay on the main executor and answer while a frame is scored. The subscription is
raw: the node reads the serialized frame in place (no copy of the pixels into a Python message)
and, before scoring, takes any newer frames that arrived meanwhile, so it always scores the newest;
the others are dropped and counted, never queued. Retrain and convert run as background jobs behind
``std_srvs/Trigger`` services; on success the node swaps to the new model between frames. Every
model call goes through ``ad_core.runtime.open_scorer``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Vector3Stamped
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float32, Header, String
from std_srvs.srv import Trigger

from ad_inspect.conversions import (
    MalformedImage,
    compressed_to_rgb,
    float_to_image,
    image_to_rgb,
    parse_compressed,
    parse_image,
    rgb_to_image,
)
from ad_inspect.subscription_loop import SubscriptionLoop

BACKENDS = ("onnxruntime", "tensorrt", "torch", "openvino")
RENDER_NICENESS = 10  # the map and overlay thread's niceness (scoring and publishing run at the process's)


@dataclass
class Counters:
    """What the node has seen; published on /diagnostics."""

    received: int = 0
    scored: int = 0
    dropped: int = 0
    maps_skipped: int = 0
    malformed: int = 0
    last_error: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)

    def stage(self, name: str, ms: float) -> None:
        """Keep the last 100 timings of one stage of the path a frame takes through the node."""
        values = self.stages_ms.setdefault(name, [])
        values.append(ms)
        del values[:-100]


class NewestSlot:
    """Hands the newest item from one thread to another, never a queue.

    An item still waiting when a newer one comes is replaced, and ``put`` says so.
    """

    def __init__(self) -> None:
        self._item: Any = None
        self._ready = threading.Condition()

    def put(self, item: Any) -> bool:
        """Offer ``item``; True when it replaced one that was still waiting."""
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._ready.notify()
        return replaced

    def take(self, stop: threading.Event) -> Any:
        """The newest item, waiting for one; None once ``stop`` is set."""
        with self._ready:
            while self._item is None and not stop.is_set():
                self._ready.wait(0.5)
            item, self._item = self._item, None
        return None if stop.is_set() else item

    def wake(self) -> None:
        """Let a waiting ``take`` see that it should stop."""
        with self._ready:
            self._ready.notify_all()


def _confined(path: str | Path, root: str | Path, what: str) -> Path:
    """``path`` resolved, refused unless it lies inside ``root``."""
    p, r = Path(path).expanduser().resolve(), Path(root).expanduser().resolve()
    if p != r and r not in p.parents:
        raise ValueError(f"{what} {p} is outside the configured root {r}")
    return p


class InspectionNode(Node):
    """Score camera frames with an ad-inspect bundle or engine."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("ad_inspect", **kwargs)
        self._declare_parameters()
        self.counters = Counters()
        self._maps = NewestSlot()  # (rgb, map, header) for the map and overlay thread
        self._frame: tuple[np.ndarray, Any] | None = None  # last converted frame and its header
        self._scorer = None
        self._scorer_lock = threading.Lock()
        self._job: dict[str, Any] | None = None
        self._job_lock = threading.Lock()
        self._stop = threading.Event()
        self._out_qos = QoSProfile(depth=10)
        self._make_publishers()
        self._load_model(initial=True)
        self._subscribe()
        group = ReentrantCallbackGroup()
        for name, handler in (
            ("retrain", self._srv_retrain),
            ("convert", self._srv_convert),
            ("reload", self._srv_reload),
            ("save_frame", self._srv_save_frame),
        ):
            self.create_service(Trigger, f"~/{name}", handler, callback_group=group)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._camera_thread = threading.Thread(target=self._camera_loop.run, name="ad_inspect_camera", daemon=True)
        self._camera_thread.start()
        self._renderer = threading.Thread(target=self._render_loop, name="ad_inspect_maps", daemon=True)
        self._renderer.start()

    # -- parameters --------------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        def p(name: str, default: Any, text: str, **extra: Any) -> None:
            self.declare_parameter(name, default, ParameterDescriptor(description=text, **extra))

        p("model_path", "", "bundle folder, meta.json, model.onnx / model.plan / model.pth (inside models_root)")
        p("backend", "onnxruntime", f"inference backend: {' | '.join(BACKENDS)}")
        p(
            "threshold",
            -1.0,
            "normalised decision threshold 0-1 (-1: meta.json's image_threshold); changeable at run time",
            floating_point_range=[FloatingPointRange(from_value=-1.0, to_value=1.0, step=0.0)],
        )
        p("image_topic", "/camera/image_raw", "input topic")
        p("compressed", False, "subscribe to sensor_msgs/CompressedImage instead of sensor_msgs/Image")
        p("output_prefix", "/anomaly", "prefix of the output topics")
        p("publish_map", True, "publish the anomaly map (32FC1, normalised)")
        p("publish_overlay", True, "publish the heat-map overlay (rgb8)")
        p("roi", [0, 0, 0, 0], "crop [x, y, width, height] before scoring; width or height 0: the whole frame")
        p("models_root", "models", "model paths (model_path, retrain and convert outputs) must lie inside it")
        p("data_root", "data", "retraining data root (seed layout); save_frame writes into it")
        p("category", "", "category folder for retrain and save_frame (default: meta.json's)")
        p("retrain_epochs", 1, "epochs of ~/retrain for EfficientAD / VAE")
        p("retrain_batch", 8, "batch size of ~/retrain")
        p("extend_bank", True, "~/retrain: PatchCore extends its memory bank, PaDiM merges statistics")

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_parameters(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "backend" and prm.value not in BACKENDS:
                return SetParametersResult(successful=False, reason=f"backend must be one of {', '.join(BACKENDS)}")
            if prm.name == "roi" and (len(prm.value) != 4 or min(prm.value) < 0):
                return SetParametersResult(successful=False, reason="roi must be [x, y, width, height], all >= 0")
            if prm.name == "model_path" and prm.value:
                try:
                    _confined(prm.value, self._param("models_root"), "model_path")
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
            if prm.name in ("image_topic", "compressed", "output_prefix"):
                return SetParametersResult(
                    successful=False, reason=f"{prm.name} is fixed after start; restart the node"
                )
        return SetParametersResult(successful=True)

    # -- topics ------------------------------------------------------------------------------------
    def _make_publishers(self) -> None:
        pre = self._param("output_prefix").rstrip("/")
        q = self._out_qos
        self.pub_score = self.create_publisher(Float32, f"{pre}/score", q)
        self.pub_raw = self.create_publisher(Float32, f"{pre}/raw_score", q)
        self.pub_decision = self.create_publisher(Bool, f"{pre}/decision", q)
        self.pub_result = self.create_publisher(Vector3Stamped, f"{pre}/result", q)
        self.pub_map = self.create_publisher(Image, f"{pre}/map", q)
        self.pub_overlay = self.create_publisher(Image, f"{pre}/overlay", q)
        self.pub_status = self.create_publisher(String, "~/status", q)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", q)

    def _subscribe(self) -> None:
        """The image subscription, on a helper node served by the camera thread's own loop."""
        compressed = bool(self._param("compressed"))
        topic = self.resolve_topic_name(self._param("image_topic"))
        self._camera = rclpy.create_node(
            f"{self.get_name()}_camera",
            namespace=self.get_namespace(),
            context=self.context,
            start_parameter_services=False,
        )
        self._image_sub = self._camera.create_subscription(
            CompressedImage if compressed else Image,
            topic,
            lambda raw: self._on_frame(raw, compressed),
            qos_profile_sensor_data,
            raw=True,
        )
        self._camera_loop = SubscriptionLoop(self._camera, self._image_sub)
        self.get_logger().info(f"listening on {topic} ({'CompressedImage' if compressed else 'Image'})")

    def _newest(self, raw: bytes) -> bytes:
        """``raw``, or the newest frame that has arrived since; the frames passed over are counted as dropped."""
        sub = self._image_sub
        while True:
            try:
                with sub.handle:
                    newer = sub.handle.take_message(sub.msg_type, sub.raw)  # what rclpy's executors call
            except Exception:  # an rclpy without it: the subscription's queue still bounds staleness
                return raw
            if newer is None:
                return raw
            raw = newer[0]
            self.counters.received += 1
            self.counters.dropped += 1

    def _on_frame(self, raw: bytes, compressed: bool) -> None:
        """Score the newest frame on the camera thread; malformed ones are logged and counted."""
        arrival = time.perf_counter()
        self.counters.received += 1
        try:
            raw = self._newest(raw)
            msg = parse_compressed(raw) if compressed else parse_image(raw)
            stamp = msg.header.stamp
            age_ms = (time.time() - stamp.sec - stamp.nanosec * 1e-9) * 1000.0
            if 0 <= age_ms < 60_000:  # publisher and node on one clock (same host or synchronised)
                self.counters.stage("stamp_to_callback", age_ms)
            self.counters.stage("take_newest", (time.perf_counter() - arrival) * 1000.0)
            self._score(msg, compressed)
        except MalformedImage as exc:
            self.counters.malformed += 1
            self.counters.last_error = str(exc)
            self._warn(f"malformed frame skipped: {exc}")
        except Exception as exc:  # the node keeps running; the cause is logged and counted
            self.counters.last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"scoring failed: {self.counters.last_error}")

    def _warn(self, text: str) -> None:
        logger = self.get_logger()
        getattr(logger, "warning", logger.warn)(text)  # Jazzy+ deprecates warn(); Humble may lack warning()

    def _status(self, **info: Any) -> None:
        self.pub_status.publish(String(data=json.dumps(info, default=str)))

    # -- the model ---------------------------------------------------------------------------------
    def _load_model(self, initial: bool = False, path: str | None = None) -> str:
        from ad_core.runtime import open_scorer

        path = path or self._param("model_path")
        if not path:
            self._warn("no model_path set: frames are counted but not scored")
            return "no model_path set"
        target = _confined(path, self._param("models_root"), "model_path")
        # ONNX Runtime's threads must not busy-wait here: between frames the cores belong to DDS, the
        # executor and the map thread (PaDiM's model call is 15-20 % faster in the node without it)
        scorer = open_scorer(target, self._param("backend") or None, spinning=False)
        with self._scorer_lock:
            self._scorer, self.model_path = scorer, target
        message = f"model {target} ({scorer.model}, {scorer.backend}, {scorer.image_size} px)"
        self.get_logger().info(("loaded " if initial else "swapped to ") + message)
        return message

    def _score(self, msg, compressed: bool) -> None:
        t_in = time.perf_counter()
        rgb = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
        x, y, w, h = (int(v) for v in self._param("roi"))
        if w > 0 and h > 0:
            if x + w > rgb.shape[1] or y + h > rgb.shape[0]:
                raise MalformedImage(f"roi {[x, y, w, h]} does not fit a {rgb.shape[1]}x{rgb.shape[0]} frame")
            rgb = np.ascontiguousarray(rgb[y : y + h, x : x + w])
        self._frame = (rgb, msg.header)  # for ~/save_frame: a copy only when the service asks
        with self._scorer_lock:
            scorer = self._scorer
        if scorer is None:
            return
        t0 = time.perf_counter()
        self.counters.stage("convert", (t0 - t_in) * 1000.0)
        out = scorer([rgb])
        t1 = time.perf_counter()
        self.counters.stage("inference", (t1 - t0) * 1000.0)
        for stage, ms in scorer.timings.items():  # inside the model call: graph, bank search...
            self.counters.stage(f"inference_{stage}", ms)
        threshold = float(self._param("threshold"))
        if threshold < 0:
            threshold = scorer.image_threshold
        score, raw = float(out.score[0]), float(out.raw_score[0])
        decision = score >= threshold
        header = Header(frame_id=msg.header.frame_id)
        header.stamp.sec, header.stamp.nanosec = msg.header.stamp.sec, msg.header.stamp.nanosec
        self.pub_score.publish(Float32(data=score))
        self.pub_raw.publish(Float32(data=raw))
        self.pub_decision.publish(Bool(data=bool(decision)))
        result = Vector3Stamped()
        result.header = header
        result.vector.x, result.vector.y, result.vector.z = score, raw, float(decision)
        self.pub_result.publish(result)
        t2 = time.perf_counter()
        self.counters.stage("publish_result", (t2 - t1) * 1000.0)
        wants_maps = self._param("publish_map") or self._param("publish_overlay")
        # rendered on its own thread: the next frame's score never waits for it
        if wants_maps and self._maps.put((rgb, out.anomaly_map[0], header)):
            self.counters.maps_skipped += 1
        self.counters.scored += 1
        lat = self.counters.latencies_ms
        lat.append((t2 - t_in) * 1000.0)
        del lat[:-100]

    def _render_loop(self) -> None:
        """Publish the newest scored frame's map and overlay; older ones still waiting are skipped."""
        from ad_core.viz import overlay

        # maps are for people and come after the result: this thread must not take a core from
        # the frames being scored or from the result's delivery (bench_ros_node.py: ~0.8 ms per frame)
        _lower_priority(RENDER_NICENESS)

        while (item := self._maps.take(self._stop)) is not None:
            rgb, heat, header = item
            t0 = time.perf_counter()
            try:
                heat = _resize(heat, rgb.shape[1], rgb.shape[0])
                if self._param("publish_map"):
                    self.pub_map.publish(float_to_image(heat, header, Image))
                if self._param("publish_overlay"):
                    self.pub_overlay.publish(rgb_to_image(overlay(rgb, heat), header, Image))
            except Exception as exc:  # a failed picture never stops scoring
                self.counters.last_error = f"map/overlay: {type(exc).__name__}: {exc}"
                self.get_logger().error(self.counters.last_error)
            self.counters.stage("map_overlay", (time.perf_counter() - t0) * 1000.0)

    # -- services ----------------------------------------------------------------------------------
    def _start_job(self, kind: str, work) -> tuple[bool, str]:
        with self._job_lock:
            if self._job is not None and self._job["state"] == "running":
                return False, f"busy: {self._job['kind']} running since {self._job['since']}; try again when it ends"
            self._job = {"kind": kind, "state": "running", "since": _dt.datetime.now().isoformat(timespec="seconds")}
        self._status(**self._job)

        def run() -> None:
            try:
                message = work()
                state = {"state": "done", "message": message}
            except Exception as exc:
                state = {"state": "failed", "message": f"{type(exc).__name__}: {exc}"}
                self.get_logger().error(f"{kind} failed: {state['message']}")
            with self._job_lock:
                self._job.update(state)
                info = dict(self._job)
            self._status(**info, model=str(getattr(self, "model_path", "")))

        threading.Thread(target=run, name=f"ad_inspect_{kind}", daemon=True).start()
        return True, f"{kind} started; progress and outcome on {self.resolve_topic_name('~/status')}"

    def _bundle(self) -> tuple[Path, dict]:
        from ad_core.bundle import bundle_dir, read_meta

        if not getattr(self, "model_path", None):
            raise RuntimeError("no model loaded")
        folder = bundle_dir(self.model_path if self.model_path.is_dir() else self.model_path.parent)
        return folder, read_meta(folder)

    def _srv_retrain(self, request, response):
        def work() -> str:
            from ad_core.retrain import retrain

            folder, meta = self._bundle()
            model = meta["model"]
            stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
            out = _confined(folder.parent / f"retrained_{stamp}", self._param("models_root"), "retrain output")
            array = meta.get("memory_bank") or meta.get("stats")
            extend = bool(self._param("extend_bank")) and array
            out = retrain(
                model,
                folder / meta["weights_pth"],
                folder / "meta.json",
                self._param("category") or meta["category"],
                self._param("data_root"),
                out,
                epochs=int(self._param("retrain_epochs")),
                batch_size=int(self._param("retrain_batch")),
                load_bank=folder / array if extend and model == "patchcore" else None,
                load_stats=folder / array if extend and model == "padim" else None,
                log=False,
            )
            return self._load_model(path=str(out))

        response.success, response.message = self._start_job("retrain", work)
        return response

    def _srv_convert(self, request, response):
        def work() -> str:
            from ad_core.convert import convtrt

            folder, meta = self._bundle()
            stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
            out = _confined(folder.parent / f"engine_{stamp}", self._param("models_root"), "convert output")
            result = convtrt(meta["model"], folder / meta["weights_pth"], folder / "meta.json", out)
            return self._load_model(path=str(result.plan or result.onnx))

        response.success, response.message = self._start_job("convert", work)
        return response

    def _srv_reload(self, request, response):
        try:
            response.message = self._load_model()
            response.success = True
        except Exception as exc:
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        return response

    def _srv_save_frame(self, request, response):
        from PIL import Image as PILImage

        from ad_core.fileio import write_bytes_atomic

        frame = self._frame
        if frame is None:
            response.success, response.message = False, "no frame received yet"
            return response
        try:
            category = self._param("category") or (self._bundle()[1]["category"])
            root = Path(self._param("data_root"))
            folder = _confined(root / "train" / category, root, "save_frame folder")
            rgb, header = frame
            name = f"field_{header.stamp.sec}_{header.stamp.nanosec:09d}.png"
            import io

            buf = io.BytesIO()
            PILImage.fromarray(rgb).save(buf, format="PNG")
            write_bytes_atomic(folder / name, buf.getvalue())
            response.success, response.message = True, str(folder / name)
        except Exception as exc:
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        return response

    # -- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        # the worker threads add stages while this runs: list() copies the dict in one step
        c = self.counters
        lat = c.latencies_ms
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if not c.last_error else DiagnosticStatus.WARN,
            name="ad_inspect: inference",
            message=c.last_error or "ok",
            hardware_id=str(getattr(self, "model_path", "")),
        )
        values = {
            "received": c.received,
            "scored": c.scored,
            "dropped": c.dropped,
            "malformed": c.malformed,
            "maps_skipped": c.maps_skipped,
            "latency_ms_median": round(float(np.median(lat)), 2) if lat else 0.0,
            **{f"{k}_ms_median": round(float(np.median(v)), 2) for k, v in list(c.stages_ms.items()) if v},
            "model": getattr(self, "model_path", ""),
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self.pub_diag.publish(arr)

    def destroy_node(self) -> None:
        """Stop the camera loop and the map thread, then the node."""
        self._stop.set()
        self._maps.wake()
        self._camera_loop.stop()
        self._camera_thread.join(timeout=5.0)  # a frame being scored finishes first
        self._camera.destroy_node()
        super().destroy_node()


def _lower_priority(niceness: int) -> None:
    """Lower the calling thread's CPU priority (Linux: a thread id is a PRIO_PROCESS target); no-op elsewhere."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def _resize(heat: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image as PILImage

    if heat.shape == (height, width):
        return np.asarray(heat, np.float32)
    return np.asarray(PILImage.fromarray(np.asarray(heat, np.float32)).resize((width, height), PILImage.BILINEAR))


def main(args: list[str] | None = None) -> None:
    """Entry point (``ros2 run ad_inspect inspection_node``)."""
    rclpy.init(args=args)
    node = InspectionNode()
    # One executor thread: rclpy's MultiThreadedExecutor adds 1.5-2 ms per frame (bench_ros_node.py).
    # Inference and map rendering have their own threads, so services and parameters stay responsive.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C, or SIGTERM / SIGINT from launch, docker stop, a supervisor: a normal stop
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
