"""A request body read under the server's limits, inflated as it arrives when it is compressed.

The limit counts the bytes the application will see: a compressed body is inflated piece by piece
and refused (413) as soon as its inflated size passes the limit, or as soon as it inflates more than
the ratio allows, so at most the limit (plus one piece) is ever held. Plain Python and zlib.
"""

from __future__ import annotations

import zlib

from runtime.core.errors import MalformedBody, RequestTooLarge
from runtime.edge.body_limits import ENV_MAX_INFLATION_RATIO, ENV_MAX_REQUEST_BYTES, RATIO_FLOOR_BYTES, BodyLimits

# zlib's window bits: 16 + 15 reads a gzip member, 15 a zlib stream (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyReader:
    def __init__(self, limits: BodyLimits, coding: str | None):
        self.limits = limits
        self.coding = coding
        self._chunks: list[bytes] = []
        self._size = 0  # bytes the application will see
        self._wire = 0  # bytes received
        self._inflater = zlib.decompressobj(_WBITS[coding]) if coding else None

    def feed(self, piece: bytes) -> None:
        """Take the next piece as received; RequestTooLarge / MalformedBody refuse the request."""
        self._wire += len(piece)
        if self._inflater is None:
            self._keep(piece)
            return
        while piece:
            room = self.limits.max_bytes - self._size + 1  # one byte more tells that it is too large
            try:
                inflated = self._inflater.decompress(piece, room)
            except zlib.error as error:
                raise MalformedBody(f"the {self.coding} body does not inflate ({error})") from None
            self._keep(inflated)
            self._check_ratio()
            piece = self._inflater.unconsumed_tail
            if self._inflater.eof:
                piece = self._next_member(piece)

    def body(self) -> bytes:
        """The whole body, once the last piece was fed."""
        if self._inflater is not None and not self._inflater.eof and self._wire:
            raise MalformedBody(f"the {self.coding} body ends before its compressed stream does")
        return b"".join(self._chunks)

    def _next_member(self, rest: bytes) -> bytes:
        # A gzip file may hold several members (RFC 1952 2.2); anything after a zlib stream is junk.
        rest = self._inflater.unused_data + rest  # type: ignore[union-attr]
        if rest and self.coding == "gzip":
            self._inflater = zlib.decompressobj(_WBITS["gzip"])
        elif rest:
            raise MalformedBody(f"the {self.coding} body has {len(rest)} bytes after its compressed stream")
        return rest

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.limits.max_bytes:
            what = "inflates to more than" if self.coding else "is more than"
            raise RequestTooLarge(
                f"request body {what} {self.limits.max_bytes} bytes, this server's limit "
                f"({ENV_MAX_REQUEST_BYTES}); send fewer rows per request"
            )
        if data:
            self._chunks.append(data)

    def _check_ratio(self) -> None:
        ratio = self.limits.max_inflation_ratio
        if self._size > RATIO_FLOOR_BYTES and self._size > ratio * self._wire:
            raise RequestTooLarge(
                f"the {self.coding} body inflates more than {ratio} times its size on the wire, this "
                f"server's limit ({ENV_MAX_INFLATION_RATIO})"
            )
