"""The channel layer: one Redis pub/sub subscription per group per web process, local delivery.

channels-redis's `RedisPubSubChannelLayer` does the fan-out poolhub needs for pools of thousands
of sockets: a `group_send` is one `PUBLISH`; Redis hands it once to each web process subscribed
to the group; the process puts it in the queue of each of its own sockets in that group. The cost
of a push in Redis does not grow with the pool, and nothing about a socket is kept in Redis: a
group's members are in the memory of the process that holds their sockets, and a subscription
ends with the process's connection. So no group can hold a channel whose socket is gone, and a
crashed web process leaves nothing behind. Each layer uses two Redis connections per process (one
subscribed, one to publish), never one per socket or per call.

Added here:
- each socket's queue is bounded (`capacity`). A socket that stops reading loses its oldest
  pushes, which `resume` replays from the event log, instead of growing the process's memory;
- leaving cannot leak a subscription: the library awaits the `UNSUBSCRIBE` in the leaving
  socket's task, so a socket cancelled while leaving (a server shutting down, thousands leaving
  at once behind the connection's lock) left the process subscribed, or logged a traceback. Here
  the unsubscribe runs in a task of its own, and a group that gained a member meanwhile is
  subscribed again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.core import BoundedQueue
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer
from channels_redis.utils import _wrap_close  # the library's own per-loop cleanup hook

DEFAULT_CAPACITY = 1000
logger = logging.getLogger(__name__)


class _BoundedLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity
        self.leaving: set[asyncio.Task[None]] = set()  # unsubscribes under way (a reference keeps each alive)

    async def _subscribe_to_channel(self, channel: str) -> None:
        self.channels[channel] = BoundedQueue(self.capacity)
        await self._get_shard(channel).subscribe(channel)

    async def receive(self, channel: str) -> Any:
        if channel not in self.channels:
            await self._subscribe_to_channel(channel)
        try:
            message = await self.channels[channel].get()
        except (TimeoutError, asyncio.CancelledError, GeneratorExit):
            # Channels cancels the receive when the socket's consumer ends: its channel goes.
            if self.channels.pop(channel, None) is not None:
                self._unsubscribe(channel)
            raise
        return self.channel_layer.deserialize(message)

    async def group_discard(self, group: str, channel: str) -> None:
        name = self._get_group_channel_name(group)
        members = self.groups.get(name)
        if not members or channel not in members:
            return
        members.discard(channel)
        if not members:
            del self.groups[name]
            self._unsubscribe(name)

    def _unsubscribe(self, name: str) -> None:
        task = asyncio.ensure_future(self._unsubscribe_unused(name))
        self.leaving.add(task)
        task.add_done_callback(self.leaving.discard)

    async def _unsubscribe_unused(self, name: str) -> None:
        shard = self._get_shard(name)
        try:
            await shard.unsubscribe(name)
            if name in self.groups:  # a socket joined while this was queued: stay subscribed
                await shard.subscribe(name)
        except Exception as exc:  # Redis gone: the subscription ends with the connection anyway
            logger.warning("unsubscribing from %s failed: %s", name, exc)


class PubSubChannelLayer(RedisPubSubChannelLayer):
    """`CHANNEL_LAYERS` backend: channels-redis's pub/sub layer with bounded socket queues."""

    def _get_layer(self) -> _BoundedLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _BoundedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer

    def group_channel(self, group: str) -> str:
        """The Redis pub/sub channel of a group."""
        return str(self._get_layer()._get_group_channel_name(group))

    def group_members(self, group: str) -> set[str]:
        """The channels of this process (on the running loop) that are in `group`: for tests and
        checks that no group keeps a socket that is gone."""
        return set(self._get_layer().groups.get(self.group_channel(group), set()))
