"""A LiveKit participant for end-to-end tests: speaks into a microphone track, counts the
agent audio it hears."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from livekit import api, rtc

from tests.support.livekit import LiveKitServer

T = TypeVar("T")


class Caller:
    """A participant joined with the rtc SDK: publishes a microphone track, listens to the agent."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.source = rtc.AudioSource(48000, 1)
        self.heard_frames = 0  # agent audio frames with sound in them
        self._tasks: list[asyncio.Task[None]] = []

    async def join(self, server: LiveKitServer, room_name: str) -> None:
        await self.join_url(server.url, server.api_key, server.api_secret, room_name)

    async def join_url(self, url: str, api_key: str, api_secret: str, room_name: str) -> None:
        token = (
            api.AccessToken(api_key, api_secret)
            .with_identity("caller-1")
            .with_metadata(json.dumps({"user_id": "user-e2e", "display_name": "Eve"}))
            .with_grants(
                api.VideoGrants(room_join=True, room=room_name, can_update_own_metadata=True)
            )
            .to_jwt()
        )

        @self.room.on("track_subscribed")
        def _subscribed(track: rtc.Track, *_: object) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                self._tasks.append(asyncio.create_task(self._listen(track)))

        await self.room.connect(url, token)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)

    async def _listen(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=24000, num_channels=1):
            samples = np.frombuffer(event.frame.data, dtype=np.int16)
            if samples.size and int(np.abs(samples).max()) > 500:
                self.heard_frames += 1

    async def speak(self, frames: list[rtc.AudioFrame]) -> None:
        for frame in frames:  # capture_frame paces the audio in real time
            await self.source.capture_frame(frame)

    async def until_quiet(self, quiet_s: float = 1.0, timeout_s: float = 60) -> None:
        """Waits until the agent has said nothing for ``quiet_s``: speaking earlier would
        interrupt it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        heard, since = self.heard_frames, loop.time()
        while loop.time() - since < quiet_s:
            if loop.time() > deadline:
                raise AssertionError(f"the agent kept talking for {timeout_s}s")
            await asyncio.sleep(0.1)
            if self.heard_frames != heard:
                heard, since = self.heard_frames, loop.time()

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.room.disconnect()


async def until(check: Callable[[], Awaitable[T]], what: str, timeout_s: float = 60) -> T:
    """Awaits ``check`` every 0.25 s until it returns something true, and returns that."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)
