"""How a request's body comes, read from its head as RFC 9110/9112 say, before a byte of it is read.

Header names and transfer/content codings are case-insensitive tokens, and a field may be repeated
or carry a comma-separated list: `Transfer-Encoding: CHUNKED` and `Content-Length: 5, 5` mean what
their lower-case, single forms mean. A head that does not say one thing is refused (RFC 9112 6.3):
two different lengths, a length that is not a number, a length beside a transfer coding, or a
transfer coding other than chunked (which this server cannot decode). Content codings: gzip (and
its alias x-gzip) and deflate are inflated by the guard; identity is none; any other is refused.
"""

from __future__ import annotations

from typing import NamedTuple

from runtime.core.errors import MalformedFraming, UnsupportedEncoding, UnsupportedTransferCoding
from runtime.edge.asgi import RawHeaders

_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class Framing(NamedTuple):
    length: int | None  # the declared Content-Length; None when chunked or absent
    coding: str | None  # "gzip" or "deflate" to inflate; None for the body as sent


def framing(headers: RawHeaders) -> Framing:
    """The body's framing and content coding, or the error that refuses the request."""
    lengths: list[bytes] = []
    transfer: list[str] = []
    content: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == b"content-length":
            lengths.append(value)
        elif key == b"transfer-encoding":
            transfer += _tokens(value)
        elif key == b"content-encoding":
            content += _tokens(value)
    if transfer:
        if lengths:
            raise MalformedFraming("the request has both Content-Length and Transfer-Encoding; send one")
        if transfer != ["chunked"]:
            raise UnsupportedTransferCoding(
                f"Transfer-Encoding {', '.join(transfer)!r} is not supported; "
                "send the body chunked or with a Content-Length"
            )
    return Framing(_length(lengths), _coding(content) if content else None)


def _tokens(value: bytes) -> list[str]:
    return [t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip()]


def _length(values: list[bytes]) -> int | None:
    if len(values) == 1 and values[0].isdigit():  # every request with a body but a chunked one
        return int(values[0])
    if not values:
        return None
    # Repeated, or a list: every element must be the same number (an empty one is not a number).
    elements = [t.strip() for v in values for t in v.decode("latin-1").split(",")]
    if not all(e.isdigit() and e.isascii() for e in elements) or len(set(map(int, elements))) != 1:
        raise MalformedFraming(f"Content-Length {', '.join(elements)!r} is not one number of bytes")
    return int(elements[0])


def _coding(values: list[str]) -> str | None:
    codings = [v for v in values if v != "identity"]
    if not codings:
        return None
    if len(codings) > 1:
        raise UnsupportedEncoding(f"Content-Encoding {', '.join(codings)!r}: one coding at most (gzip or deflate)")
    coding = _CODINGS.get(codings[0])
    if coding is None:
        raise UnsupportedEncoding(f"Content-Encoding {codings[0]!r} is not supported; send gzip, deflate or none")
    return coding
