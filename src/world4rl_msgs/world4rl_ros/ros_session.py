"""An rclpy node in its own context, spun by a background thread: how the CLI (and the tests)
talk to a running node graph, with service calls that time out and say what they waited for."""

from __future__ import annotations

import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


class RosCallError(RuntimeError):
    """A service was not there, did not answer in time, or answered that it failed."""


class RosSession:
    def __init__(self, name: str, domain_id: int | None = None, namespace: str = ""):
        """`namespace`: the node's namespace ('' the root); relative topic and service names resolve
        in it, so a session in the namespace of a graph started there talks to that graph only."""
        self.context = rclpy.Context()
        if domain_id is None:
            rclpy.init(context=self.context)
        else:
            rclpy.init(context=self.context, domain_id=domain_id)
        self.node: Node = rclpy.create_node(name, context=self.context, namespace=namespace or None)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._clients: dict[str, object] = {}

    def client(self, srv_type, name: str):
        if name not in self._clients:
            self._clients[name] = self.node.create_client(srv_type, name)
        return self._clients[name]

    def call(
        self,
        srv_type,
        name: str,
        request,
        timeout: float = 10.0,
        check_ok: bool = True,
        resend_after: float | None = None,
    ):
        """Call a service; with check_ok, a response whose `ok`/`success` is false raises too.

        `resend_after` (idempotent services only: a reset to a seed, arm/disarm): send the request
        again when no answer came within that many seconds. Fast DDS drops a response whose way
        back to the client is not matched yet ("failed to send response (timeout)" in the server's
        log), which happens on a loaded machine soon after the graph starts."""
        client = self.client(srv_type, name)
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():
            if time.monotonic() > deadline:
                raise RosCallError(f"service {name} ({srv_type.__name__}) is not available after {timeout:.0f} s")
            time.sleep(0.05)
        future, sent = client.call_async(request), time.monotonic()
        while not future.done():
            now = time.monotonic()
            if now > deadline:
                client.remove_pending_request(future)
                raise RosCallError(f"service {name} did not answer within {timeout:.0f} s")
            if resend_after is not None and now - sent > resend_after:
                client.remove_pending_request(future)
                future, sent = client.call_async(request), now
            time.sleep(0.005)
        response = future.result()
        if check_ok:
            ok = getattr(response, "ok", getattr(response, "success", True))
            if not ok:
                raise RosCallError(f"service {name} refused: {getattr(response, 'message', '')}")
        return response

    def call_until_ok(self, srv_type, name: str, request, within: float, resend_after: float | None = None):
        """Call again while the server answers not ok (e.g. a node that has not heard the arm yet),
        for up to `within` seconds; then raise RosCallError with its last answer."""
        deadline = time.monotonic() + within
        while True:
            reply = self.call(srv_type, name, request, check_ok=False, resend_after=resend_after)
            if getattr(reply, "ok", getattr(reply, "success", True)):
                return reply
            if time.monotonic() > deadline:
                raise RosCallError(f"service {name} refused: {getattr(reply, 'message', '')}")
            time.sleep(0.1)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)

    def __enter__(self) -> RosSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
