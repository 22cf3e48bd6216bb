"""A Foxglove WebSocket client for tests (websockets + protobuf, imported only by the tests that use it).

It speaks what foxglove-sdk's server speaks (subprotocol foxglove.sdk.v1, the same messages as
foxglove.websocket.v1): it collects the advertised channels, subscribes to them (subscription id =
channel id), and decodes message data, protobuf channels with the schema the server advertised
(a FileDescriptorSet), JSON channels as JSON.

    with FoxgloveClient(port) as client:
        client.subscribe({"/live_view/camera"})
        client.receive(lambda messages: len(messages["/live_view/camera"]) >= 3, timeout=10)
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections import defaultdict
from collections.abc import Callable

SUBPROTOCOL = "foxglove.sdk.v1"
MESSAGE_DATA = 0x01  # binary opcode: subscription id (u32), log time (u64), payload
_MESSAGE_HEADER = struct.Struct("<BIQ")


class FoxgloveClient:
    def __init__(self, port: int, host: str = "127.0.0.1", subprotocol: str = SUBPROTOCOL):
        self.url = f"ws://{host}:{port}"
        self.subprotocol = subprotocol
        self.channels: dict[int, dict] = {}
        self.decoders: dict[int, type] = {}
        self.messages: dict[str, list] = defaultdict(list)

    def __enter__(self) -> FoxgloveClient:
        from websockets.sync.client import connect

        self._connection = connect(self.url, subprotocols=[self.subprotocol], max_size=None, open_timeout=10)
        self.ws = self._connection.__enter__()
        if self.ws.subprotocol != self.subprotocol:
            raise AssertionError(f"{self.url} answered with subprotocol {self.ws.subprotocol!r}")
        return self

    def __exit__(self, *exc) -> None:
        self._connection.__exit__(*exc)

    def subscribe(self, wanted: set[str], timeout: float = 10.0) -> None:
        """Wait until the server advertised the `wanted` topics, then subscribe to every channel."""
        deadline = time.monotonic() + timeout
        while not wanted <= {c["topic"] for c in self.channels.values()}:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            for channel in message.get("channels", []) if message["op"] == "advertise" else []:
                self.channels[channel["id"]] = channel
                if channel["encoding"] == "protobuf":
                    self.decoders[channel["id"]] = self._decoder(channel["schemaName"], channel["schema"])
        subscriptions = [{"id": cid, "channelId": cid} for cid in self.channels]
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": subscriptions}))

    @staticmethod
    def _decoder(name: str, schema: str) -> type:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(schema))
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            pool.Add(file)
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    def receive(self, done: Callable[[dict[str, list]], bool], timeout: float) -> bool:
        """Collect decoded messages by topic until done(self.messages) (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout
        while not done(self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                data = self.ws.recv(timeout=min(remaining, 0.5))
            except TimeoutError:
                continue
            if isinstance(data, bytes) and data[0] == MESSAGE_DATA:
                _, sid, _ = _MESSAGE_HEADER.unpack_from(data)
                payload = data[_MESSAGE_HEADER.size :]
                body = self.decoders[sid].FromString(payload) if sid in self.decoders else json.loads(payload)
                self.messages[self.channels[sid]["topic"]].append(body)
        return True


def image_shape(msg) -> tuple[int, int, int]:
    """(height, width, 3) of a foxglove.RawImage that is well-formed rgb8 (else AssertionError)."""
    if (msg.encoding, msg.step, len(msg.data)) != ("rgb8", msg.width * 3, msg.width * 3 * msg.height):
        raise AssertionError(f"not a packed rgb8 image: {msg.encoding} {msg.width}x{msg.height} step {msg.step}")
    return (msg.height, msg.width, 3)
