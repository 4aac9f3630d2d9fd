"""The real servers the tests start: FerretDB (MongoDB wire) and livekit-server (dev mode)."""

from __future__ import annotations

import uuid

import pytest
from livekit import api
from pymongo import AsyncMongoClient

from tests.support.ferretdb import MongoTarget
from tests.support.livekit import LiveKitServer


@pytest.mark.ferretdb
async def test_mongo_round_trip_with_async_client(mongo: MongoTarget) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        mongo.uri, serverSelectionTimeoutMS=5000
    )
    try:
        collection = client[mongo.database]["roundtrip"]
        doc_id = str(uuid.uuid4())
        await collection.insert_one({"_id": doc_id, "text": "hello", "n": 3})
        found = await collection.find_one({"_id": doc_id})
        assert found == {"_id": doc_id, "text": "hello", "n": 3}
        await collection.create_index([("n", 1)], unique=True)
        result = await collection.delete_one({"_id": doc_id})
        assert result.deleted_count == 1
        assert await collection.find_one({"_id": doc_id}) is None
    finally:
        await client[mongo.database].drop_collection("roundtrip")
        await client.close()


@pytest.mark.livekit
async def test_livekit_server_lists_rooms_with_dev_keys(livekit: LiveKitServer) -> None:
    lk = api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)
    try:
        room_name = f"room-{uuid.uuid4().hex[:8]}"
        await lk.room.create_room(api.CreateRoomRequest(name=room_name, metadata='{"a": 1}'))
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
        assert room_name in [room.name for room in rooms.rooms]
        await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))
    finally:
        await lk.aclose()


@pytest.mark.livekit
async def test_livekit_server_rejects_wrong_secret(livekit: LiveKitServer) -> None:
    lk = api.LiveKitAPI(livekit.http_url, livekit.api_key, "wrong-secret-wrong-secret-wrong")
    try:
        with pytest.raises(api.TwirpError) as info:
            await lk.room.list_rooms(api.ListRoomsRequest())
        assert info.value.status == 401
    finally:
        await lk.aclose()
