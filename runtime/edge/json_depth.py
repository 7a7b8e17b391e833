"""How deeply a JSON body nests, counted over its brackets alone before any parser recurses into it.

Python's json module recurses once per level (a few thousand levels are a RecursionError, a 500);
orjson stops at 1024. The guard refuses a body nested past the server's depth (400) before either
sees it. Linear in the body and bounded in memory: the brackets are found by bytes.translate, their
common shallow case (a short run of brackets) settled by removing innermost pairs a few times over, the rest by
numpy summing their running depth one block at a time.
"""

from __future__ import annotations

import re

import numpy as np

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPENERS = (ord("["), ord("{"))
_BLOCK = 1 << 16
# Up to this many brackets the rounds of _shallow cost less than numpy's fixed cost; past it, each
# round is a pass over a long string, and a hostile body could make the rounds many.
_SHORT = 4096


def within(body: bytes, limit: int) -> bool:
    """Whether no array or object in `body` lies more than `limit` levels deep. Brackets inside
    strings do not count. Not a validity check: the parser still refuses malformed JSON."""
    if count_up_to(body, b"[", limit + 1) + count_up_to(body, b"{", limit + 1) <= limit:
        return True
    brackets = _brackets(body)
    if len(brackets) <= _SHORT and _shallow(brackets, limit // 2):
        return True
    return _deepest(brackets) <= limit


def count_up_to(data: bytes, byte: bytes, cap: int) -> int:
    """How many times `byte` occurs in `data`, counting no further than `cap`. Each step is a memchr:
    a large body with few brackets is passed over many times faster than bytes.count reads it."""
    count, at = 0, data.find(byte)
    while at >= 0 and count < cap:
        count += 1
        at = data.find(byte, at + 1)
    return count


def _brackets(body: bytes) -> bytes:
    """The body's brackets outside strings, in order."""
    if b'"' in body:
        # Without a backslash a string is plainly quote to quote; with one, escapes need the regex.
        body = _STRING.sub(b"", body) if b"\\" in body else b"".join(body.split(b'"')[::2])
    return body.translate(None, _NOT_BRACKETS)


def _shallow(brackets: bytes, passes: int) -> bool:
    """Whether `passes` rounds of removing empty pairs leave nothing. A round removes one or two
    levels ("[]" first, then "{}", which may just have emptied), so nothing left means at most
    2 x passes levels."""
    for _ in range(passes):
        if not brackets:
            return True
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    return not brackets


def _deepest(brackets: bytes) -> int:
    deepest = level = 0
    for start in range(0, len(brackets), _BLOCK):
        codes = np.frombuffer(brackets, np.uint8, count=min(_BLOCK, len(brackets) - start), offset=start)
        levels = np.cumsum(np.where((codes == _OPENERS[0]) | (codes == _OPENERS[1]), 1, -1), dtype=np.int64)
        levels += level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest
