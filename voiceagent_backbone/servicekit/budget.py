"""Responses bounded by bytes, not only by counts.

A page of 1,000 events is legal, and so is an event of 32 KiB: together they are a 32 MB
reply that gRPC refuses to send (RESOURCE_EXHAUSTED), and a client that retries the same
request fails forever. Every list a service returns is therefore filled through a
`ByteBudget` below the message limit; what did not fit comes with the next page, the next
batch or the next token.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

# Room for the response's other fields and the framing around the list.
_HEADROOM = 64 * 1024


def _varint_len(value: int) -> int:
    length = 1
    while value >= 0x80:
        value >>= 7
        length += 1
    return length


class ByteBudget:
    """Counts the elements of a repeated message field against the message limit."""

    def __init__(self, max_message_bytes: int) -> None:
        self.limit = max(max_message_bytes - _HEADROOM, max_message_bytes // 2)
        self.used = 0

    def take(self, item: Message) -> bool:
        """Count `item`; False (nothing counted) when it would take the reply past the limit.
        The first item always fits: every item is bounded far below the limit on input."""
        size = item.ByteSize()
        cost = size + _varint_len(size) + 2  # the element's length and field tag
        if self.used and self.used + cost > self.limit:
            return False
        self.used += cost
        return True

    def fill(self, items: Sequence[Message]) -> int:
        """How many of `items`, from the first, fit."""
        for taken, item in enumerate(items):
            if not self.take(item):
                return taken
        return len(items)
