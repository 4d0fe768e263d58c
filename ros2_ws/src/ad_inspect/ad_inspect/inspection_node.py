"""ROS 2 inspection node: camera frames in, anomaly score, decision, map and overlay out.

A thin node over :class:`ad_core.inspector.Inspector`, which holds the ROI, the live threshold and
the decision, and over :mod:`ad_core.edge` for the services; this file holds parameters, topics,
message conversion, publishing and service wiring only.

Frames are scored on a camera thread of their own, which waits on the image subscription alone (a
helper node ``<name>_camera`` that no executor spins; ``SubscriptionLoop``): parameters, services
and diagnostics stay on the main executor and answer while a frame is scored. The subscription is
raw: the node reads the serialized frame in place and, before scoring, takes any newer frames that
arrived meanwhile, so it always scores the newest; the others are dropped and counted, never
queued. Maps and overlays are published from a third thread at a lower priority. Retrain and
convert run as one background job at a time (:class:`ad_core.jobs.JobSlot`); on success the node
swaps to the new model between frames.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Vector3Stamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float32, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from ad_core.bundle import bundle_dir, model_version, read_meta
from ad_core.capture import FieldCapture, writable
from ad_core.data.ros_images import (
    MalformedImage,
    compressed_to_rgb,
    float_to_image,
    image_to_rgb,
    parse_compressed,
    parse_image,
    rgb_to_image,
)
from ad_core.edge import confined, convert_next, retrain_next, save_frame
from ad_core.errors import ADCoreError, DataError
from ad_core.fleet import RegistryCache, cached_version_of, convert_once
from ad_core.inspector import Inspector, StreamStats
from ad_core.jobs import Job, JobSlot, NewestSlot, lower_thread_priority
from ad_core.tracking import is_model_uri
from ad_inspect.messages import (
    copy_header,
    defects_message,
    diagnostics,
    mask_message,
    region_markers,
    result_messages,
)
from ad_inspect.parameters import CAPTURE, PARAMETERS, capture_mode, refusal
from ad_inspect.subscription_loop import SubscriptionLoop

RENDER_NICENESS = 10  # the map and overlay thread's niceness (scoring and publishing run at the process's)


class InspectionNode(Node):
    """Score camera frames with an ad-inspect bundle or engine."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("ad_inspect", **kwargs)
        self._stop = threading.Event()  # first: destroy_node may run on a node whose start failed
        self.capture: FieldCapture | None = None
        self._camera_loop = None
        self._declare_parameters()
        self.stats = StreamStats()
        self._maps = NewestSlot()  # (inspection, header) for the map and overlay thread
        self._frame: tuple[Any, Any] | None = None  # last converted frame and its header, for ~/save_frame
        self.inspector: Inspector | None = None
        self.model_path: Path | None = None
        self.model_version = ""
        self._jobs = JobSlot()
        self._out_qos = QoSProfile(depth=10)
        self._make_publishers()
        self._load_model(initial=True)
        self._make_capture()
        self._subscribe()
        group = ReentrantCallbackGroup()
        for name in ("retrain", "convert", "reload", "save_frame"):
            self.create_service(Trigger, f"~/{name}", getattr(self, f"_srv_{name}"), callback_group=group)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup())
        self._camera_thread = threading.Thread(target=self._camera_loop.run, name="ad_inspect_camera", daemon=True)
        self._camera_thread.start()
        self._renderer = threading.Thread(target=self._render_loop, name="ad_inspect_maps", daemon=True)
        self._renderer.start()
        threading.Thread(target=self._poll_registry, name="ad_inspect_registry", daemon=True).start()
        self.get_logger().info(self._listening)  # last: the node is ready (tests and supervisors wait for it)

    # -- parameters --------------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        for name, default, text, extra in PARAMETERS:
            self.declare_parameter(name, default, ParameterDescriptor(description=text, **extra))

    def _param(self, name: str) -> Any:
        value = self.get_parameter(name).value
        return capture_mode(value) if name == "capture" else value

    def _on_parameters(self, params) -> SetParametersResult:
        for prm in params:
            reason = refusal(prm.name, prm.value, self._param("models_root"))
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for prm in params:  # all valid: the inspector takes the live ones from the next frame on
            if self.inspector is not None and prm.name == "threshold":
                self.inspector.threshold = float(prm.value)
            if self.inspector is not None and prm.name == "roi":
                self.inspector.roi = list(prm.value)
            if self.inspector is not None and prm.name == "pixel_threshold":
                self.inspector.pixel_threshold = float(prm.value)
        changed = {prm.name: capture_mode(prm.value) if prm.name == "capture" else prm.value
                   for prm in params if prm.name in CAPTURE}  # fmt: skip
        if changed:  # the callback runs before the values are set: pass the new ones
            self._make_capture(changed)
        return SetParametersResult(successful=True)

    def _make_capture(self, changed: dict[str, Any] | None = None) -> None:
        """(Re)start field capture with the parameters in force (off when data_root is not writable)."""
        p = {name: self._param(name) for name in CAPTURE} | (changed or {})
        mode, data_root = p["capture"], p["data_root"]
        category = p["category"] or (self.inspector.scorer.meta.get("category") if self.inspector else "")
        if mode != "off" and not category:
            mode = "off"
        elif mode != "off" and not writable(Path(data_root) / "review"):
            self._warn(f"capture off: {data_root} is not writable")
            mode = "off"
        old, self.capture = self.capture, FieldCapture(
            data_root, category or "none", mode,
            max_per_min=p["capture_max_per_min"], normal_rate=p["capture_normal_rate"],
            min_free_mb=p["capture_min_free_mb"], model=str(self.model_path or ""),
            model_version=self.model_version,
        )  # fmt: skip
        if old is not None:
            old.close()

    # -- topics ------------------------------------------------------------------------------------
    def _make_publishers(self) -> None:
        pre = self._param("output_prefix").rstrip("/")
        q = self._out_qos
        self.pub_score = self.create_publisher(Float32, f"{pre}/score", q)
        self.pub_raw = self.create_publisher(Float32, f"{pre}/raw_score", q)
        self.pub_decision = self.create_publisher(Bool, f"{pre}/decision", q)
        self.pub_result = self.create_publisher(Vector3Stamped, f"{pre}/result", q)
        self._result_pubs = (self.pub_score, self.pub_raw, self.pub_decision, self.pub_result)
        self.pub_map = self.create_publisher(Image, f"{pre}/map", q)
        self.pub_overlay = self.create_publisher(Image, f"{pre}/overlay", q)
        self.pub_mask = self.create_publisher(Image, f"{pre}/mask", q)
        self.pub_markers = self.create_publisher(MarkerArray, f"{pre}/regions", q)
        self.pub_defects = self.create_publisher(String, f"{pre}/defects", q)
        self.pub_status = self.create_publisher(String, "~/status", q)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", q)

    def _subscribe(self) -> None:
        """The image subscription, on a helper node served by the camera thread's own loop."""
        compressed = bool(self._param("compressed"))
        topic = self.resolve_topic_name(self._param("image_topic"))
        self._camera_loop = SubscriptionLoop.on_topic(
            self,
            CompressedImage if compressed else Image,
            topic,
            lambda raw: self._on_frame(raw, compressed),
            qos_profile_sensor_data,
        )
        self._listening = f"listening on {topic} ({'CompressedImage' if compressed else 'Image'})"

    def _on_frame(self, raw: bytes, compressed: bool) -> None:
        """Score the newest frame on the camera thread; malformed ones are logged and counted."""
        arrival = time.perf_counter()
        self.stats.received += 1
        try:
            raw, passed = self._camera_loop.newest(raw)
            self.stats.received += passed
            self.stats.dropped += passed
            msg = parse_compressed(raw) if compressed else parse_image(raw)
            stamp = msg.header.stamp
            age_ms = (time.time() - stamp.sec - stamp.nanosec * 1e-9) * 1000.0
            if 0 <= age_ms < 60_000:  # publisher and node on one clock (same host or synchronised)
                self.stats.stage("stamp_to_callback", age_ms)
            self.stats.stage("take_newest", (time.perf_counter() - arrival) * 1000.0)
            self._score(msg, compressed)
        except (MalformedImage, DataError) as exc:
            self.stats.malformed += 1
            self.stats.last_error = str(exc)
            self._warn(f"malformed frame skipped: {exc}")
        except Exception as exc:  # the node keeps running; the cause is logged and counted
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"scoring failed: {self.stats.last_error}")

    def _warn(self, text: str) -> None:
        logger = self.get_logger()
        getattr(logger, "warning", logger.warn)(text)  # Jazzy+ deprecates warn(); Humble may lack warning()

    def _status(self, **info: Any) -> None:
        self.pub_status.publish(String(data=json.dumps(info, default=str)))

    # -- the model ---------------------------------------------------------------------------------
    def _load_model(self, initial: bool = False, path: str | Path | None = None) -> str:
        path = path or self._param("model_path")
        if not path:
            self._warn("no model_path set: frames are counted but not scored")
            return "no model_path set"
        note = ""
        if is_model_uri(str(path)):  # a fleet cell: the registry's version, cached and verified under models_root
            resolved = RegistryCache(self._param("models_root"), self._param("registry_uri")).resolve(str(path))
            path, note = resolved.path, resolved.note
            if note:
                self._warn(note)
        target = confined(path, self._param("models_root"), "model_path")
        # ONNX Runtime's threads must not busy-wait here: between frames the cores belong to DDS, the
        # executor and the map thread (PaDiM's model call is 15-20 % faster in the node without it)
        inspector = Inspector.open(
            target,
            self._param("backend") or None,
            roi=list(self._param("roi")),
            threshold=self._param("threshold"),
            pixel_threshold=self._param("pixel_threshold"),
            spinning=False,
        )
        self.inspector, self.model_path = inspector, target  # one assignment: the next frame uses the new model
        scorer = inspector.scorer
        registered = cached_version_of(target)
        self.model_version = "/".join(registered) if registered else model_version(scorer.meta)
        if self.capture is not None:
            self.capture.model, self.capture.model_version = str(target), self.model_version
        search = f", bank search {scorer.search.engine}" if scorer.search is not None else ""  # GPU or CPU: say which
        message = (
            f"model {self.model_version} at {target} ({scorer.model}, {scorer.backend}{search}, {scorer.image_size} px)"
        )
        self.get_logger().info(("loaded " if initial else "swapped to ") + message)
        self._status(event="model", model=str(target), model_version=self.model_version, offline_note=note)
        return message + (f"; {note}" if note else "")

    def _score(self, msg, compressed: bool) -> None:
        t_in = time.perf_counter()
        rgb = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
        self._frame = (rgb, msg.header)  # for ~/save_frame: a copy only when the service asks
        inspector = self.inspector
        if inspector is None:
            return
        t0 = time.perf_counter()
        self.stats.stage("convert", (t0 - t_in) * 1000.0)
        result = inspector(rgb)
        t1 = time.perf_counter()
        self.stats.stage("inference", (t1 - t0) * 1000.0)
        for stage, ms in result.timings.items():  # inside the model call: graph, bank search...
            self.stats.stage(f"inference_{stage}", ms)
        header = copy_header(msg.header)
        for pub, out in zip(self._result_pubs, result_messages(result, header), strict=True):
            pub.publish(out)
        t2 = time.perf_counter()
        self.stats.stage("publish_result", (t2 - t1) * 1000.0)
        # rendered on its own thread: the next frame's score never waits for it
        wants_maps = any(self._param(f"publish_{k}") for k in ("map", "overlay", "mask", "regions"))
        if wants_maps and self._maps.put((result, header)):
            self.stats.maps_skipped += 1
        if self.capture is not None:  # hands the frame over; the capture thread writes it
            self.capture.offer(result, header.stamp.sec, header.stamp.nanosec, header.frame_id)
        self.stats.scored += 1
        self.stats.latency((t2 - t_in) * 1000.0)

    def _render_loop(self) -> None:
        """Publish the newest scored frame's map and overlay; older ones still waiting are skipped."""
        # maps are for people and come after the result: this thread must not take a core from
        # the frames being scored or from the result's delivery (bench_ros_node.py: ~0.8 ms per frame)
        lower_thread_priority(RENDER_NICENESS)
        while (item := self._maps.take(self._stop)) is not None:
            result, header = item
            t0 = time.perf_counter()
            try:
                if self._param("publish_map"):
                    self.pub_map.publish(float_to_image(result.map_at_image(), header, Image))
                if self._param("publish_overlay"):
                    self.pub_overlay.publish(rgb_to_image(result.overlay(), header, Image))
                if self._param("publish_mask"):
                    self.pub_mask.publish(mask_message(result.mask(), header, Image))
                if self._param("publish_regions"):
                    self.pub_defects.publish(defects_message(result, header))
                    size = (result.offset[0] + result.image.shape[1], result.offset[1] + result.image.shape[0])
                    if self._frame is not None:
                        size = (self._frame[0].shape[1], self._frame[0].shape[0])
                    self.pub_markers.publish(
                        region_markers(
                            result, header, size, self._param("marker_depth"), self._param("marker_focal_px")
                        )
                    )
            except Exception as exc:  # a failed picture never stops scoring
                self.stats.last_error = f"map/overlay: {type(exc).__name__}: {exc}"
                self.get_logger().error(self.stats.last_error)
            self.stats.stage("map_overlay", (time.perf_counter() - t0) * 1000.0)

    def _poll_registry(self) -> None:
        """With a models:/ model_path and registry_poll_s > 0: swap to a new version between frames when one appears."""
        last = time.monotonic()
        while not self._stop.wait(1.0):
            period, uri = float(self._param("registry_poll_s")), str(self._param("model_path"))
            if period <= 0 or not is_model_uri(uri) or time.monotonic() - last < period:
                continue
            last = time.monotonic()
            try:
                resolved = RegistryCache(self._param("models_root"), self._param("registry_uri")).resolve(uri)
                if resolved.label != self.model_version and not resolved.offline:
                    self._load_model()
            except Exception as exc:  # the cell keeps running on the model it has
                self.stats.last_error = f"registry poll: {exc}"

    # -- services ----------------------------------------------------------------------------------
    def _start_job(self, kind: str, work) -> tuple[bool, str]:
        if self.model_path is None:
            return False, "no model loaded (set model_path)"
        started, message = self._jobs.start(kind, work, on_end=self._job_ended)
        if not started:
            return False, message
        self._status(**self._jobs.job.info())
        return True, f"{message}; progress and outcome on {self.resolve_topic_name('~/status')}"

    def _job_ended(self, job: Job) -> None:
        if job.state != "done":
            self.get_logger().error(f"{job.kind} {job.state}: {job.message}")
        self._status(**job.info(), model=str(self.model_path or ""))

    def _srv_retrain(self, request, response):
        def work(stop: threading.Event) -> str:
            out = retrain_next(
                self.model_path,
                self._param("data_root"),
                root=self._param("models_root"),
                category=self._param("category") or None,
                epochs=int(self._param("retrain_epochs")),
                batch_size=int(self._param("retrain_batch")),
                merge=bool(self._param("extend_bank")),
                stop=stop,
                device=self._param("device"),
            )
            return self._load_model(path=out)

        response.success, response.message = self._start_job("retrain", work)
        return response

    def _srv_convert(self, request, response):
        def work(stop: threading.Event) -> str:
            registered = cached_version_of(self.model_path)
            if registered:  # a registry version is converted once, into its cache folder
                folder = RegistryCache(self._param("models_root")).folder(*registered)
                return self._load_model(path=convert_once(folder))
            return self._load_model(path=convert_next(self.model_path, root=self._param("models_root")))

        response.success, response.message = self._start_job("convert", work)
        return response

    def _srv_reload(self, request, response):
        return _reply(response, self._load_model)

    def _srv_save_frame(self, request, response):
        return _reply(response, self._save_frame)

    def _save_frame(self) -> Path:
        if self._frame is None:
            raise RuntimeError("no frame received yet")
        rgb, header = self._frame
        rgb = self.inspector.crop(rgb) if self.inspector is not None else rgb  # what the model sees
        category = self._param("category") or read_meta(bundle_dir(self.model_path))["category"]
        return save_frame(
            rgb, self._param("data_root"), category, f"field_{header.stamp.sec}_{header.stamp.nanosec:09d}"
        )

    # -- diagnostics -------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        model = str(self.model_path or "")
        capture = self.capture.summary() if self.capture is not None else {}
        values = {**self.stats.summary(), "model": model, "model_version": self.model_version, **capture}
        problem = self.stats.last_error or (self.capture.problem() if self.capture is not None else "")
        self.pub_diag.publish(diagnostics(values, problem, model, self.get_clock().now().to_msg()))

    def destroy_node(self) -> None:
        """Stop the camera loop and the map thread, then the node (also one whose start failed half-way)."""
        self._stop.set()
        if hasattr(self, "_maps"):
            self._maps.wake()
        if self._camera_loop is not None:
            self._camera_loop.stop()
            if hasattr(self, "_camera_thread"):
                self._camera_thread.join(timeout=5.0)  # a frame being scored finishes first
            self._camera_loop.node.destroy_node()
        if self.capture is not None:
            self.capture.close()  # what was handed over is written
        super().destroy_node()


def _reply(response, call):
    """Fill a Trigger response from ``call()``: its result as the message, or the error."""
    try:
        response.message, response.success = str(call()), True
    except Exception as exc:
        response.message, response.success = f"{type(exc).__name__}: {exc}", False
    return response


def main(args: list[str] | None = None) -> None:
    """Entry point (``ros2 run ad_inspect inspection_node``)."""
    rclpy.init(args=args)
    node, code = None, 0
    try:
        node = InspectionNode()  # inside the try: a signal while the node is being built is a normal stop too
        # One executor thread: rclpy's MultiThreadedExecutor adds 1.5-2 ms per frame (bench_ros_node.py).
        # Inference and map rendering have their own threads, so services and parameters stay responsive.
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C, or SIGTERM / SIGINT from launch, docker stop, a supervisor: a normal stop
    except ADCoreError as exc:  # a model that cannot be loaded at start: say why, no traceback
        print(f"ad_inspect: cannot start: {exc}", file=sys.stderr, flush=True)
        code = 2
    except Exception:
        if rclpy.ok():
            raise
        # a signal that shut the context down just before the executor's first wait makes rclpy raise
        # RCLError ("the given context is not valid") instead of ExternalShutdownException: a normal stop
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
