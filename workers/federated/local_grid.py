"""A Flower ``Grid`` that delivers each message to a ``ClientApp`` in this process.

A federated search scores thousands of candidates, each a few message exchanges; Flower's simulation
engine runs a whole ``ServerApp`` to completion per call and starts (and, at its end, shuts down) its own
Ray backend, so it cannot serve as an evaluation worker's long-lived federation. This grid keeps the same
contract instead: the server builds ordinary Flower ``Message``s, each node's ``ClientApp`` handles them
with its own ``Context`` (``partition-id``, ``num-partitions``, as the simulation engine sets them), and a
client that raises answers with a Flower error reply, which costs that reply only. Every reply can be
shown to ``listeners`` (say, to count bytes or to read exactly what the server receives).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from uuid import uuid4

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

Listener = Callable[[Message, Message], None]  # (the message sent, its reply)
FIRST_NODE_ID = 1001  # node ids of partitions 0, 1, ... (the server is SUPERLINK_NODE_ID)


class LocalGrid(Grid):
    """``clients`` nodes running ``app``; node ``FIRST_NODE_ID + i`` holds partition ``i``."""

    def __init__(self, app: ClientApp, clients: int, run_id: int = 1) -> None:
        self.app = app
        self._run = Run.create_empty(run_id)
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": clients},
                state=RecordDict(),
                run_config={},
            )
            for i in range(clients)
        }
        self.listeners: list[Listener] = []
        self._replies: dict[str, Message] = {}
        self.identify()

    def node_of(self, partition: int) -> int:
        return FIRST_NODE_ID + partition

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        self.identify()
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def identify(self) -> None:
        """This process is the server, as Flower's simulation sets it: ``Message(...)`` reads the identity."""
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = self._run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node's ClientApp now; the replies wait to be pulled."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            reply = self._deliver(msg)
            reply.metadata.__dict__["_message_id"] = str(uuid4())
            for listener in self.listeners:
                listener(msg, reply)
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def _deliver(self, msg: Message) -> Message:
        context = self.contexts.get(msg.metadata.dst_node_id)
        if context is None:
            reason = f"no node {msg.metadata.dst_node_id}"
            return Message(Error(code=ErrorCode.UNKNOWN, reason=reason), reply_to=msg)
        threads = torch.get_num_threads()
        try:
            return self.app(msg, context)
        except Exception as exc:  # noqa: BLE001 - a failing client costs its own reply, as in the simulation engine
            trace = traceback.format_exc(limit=2)
            reason = f"{type(exc)}:<'{exc}\n{trace}'>"
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
        finally:
            torch.set_num_threads(threads)  # the federated jobs' handlers pin one thread per client process

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Every reply (clients run one after another in this process, so ``timeout`` never cuts one off)."""
        return self.pull_messages(self.push_messages(list(messages)))
