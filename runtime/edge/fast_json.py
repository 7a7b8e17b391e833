"""The REST fast path's request reader: a V2 body in the one simple form this runtime serves most,
straight to plain tensors, without FastAPI's routing and pydantic's validation in between.

A binary request (runtime.edge.binary) arrives here parsed, its binary inputs' data decoded.
A large JSON body is parsed by simdjson, which reads a numeric input's flat `data` straight into a
numpy array (no Python float per value: 10,000 rows decode in about half orjson's time); everything
else becomes the Python values orjson would give. A small one is parsed by orjson, faster where
there are few values to read (walking simdjson's proxies from Python costs more than it saves).

Simple means: a JSON object with `inputs` (and optionally a string `id`, `outputs` naming outputs,
boolean `ood_flags` / `feature_sources` parameters and a string `content_type`, which the runtime
reads no more than MLServer's path does: PandasCodec's "pd" and "str" mark a DataFrame sent one
tensor per column), each input exactly `name`, `shape`
(integers), a numeric `datatype` and `data` (a list), or BYTES `data` of strings and nulls (a string
column, flat or one per row as [N, 1]; the BYTES `entity_id`), and optionally `parameters` holding
only a string `content_type`.
Anything else, including every malformed body, is None: MLServer's own path serves it, so a
mistake gets exactly the answer it always got. The values themselves are checked by the input
contract, the same code for both paths.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from runtime.core.contract import Tensor
from runtime.core.datatypes import NUMERIC_DATATYPES
from runtime.edge.json_depth import count_up_to

_REQUEST_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data"})
# Request parameters the runtime reads; as booleans, MLServer's own parsing leaves them unchanged.
_FLAGS = frozenset({"ood_flags", "feature_sources"})
# A codec's name (PandasCodec's "pd", StringCodec's "str"): a string MLServer's path passes by too.
_CONTENT_TYPE = "content_type"
_BOM = b"\xef\xbb\xbf"
# From this size on a body's numbers are read in place (docs/performance.md, "Large batches").
IN_PLACE_FROM_BYTES = 16 * 1024
_PARSERS = threading.local()


@dataclass(frozen=True)
class SimpleRequest:
    id: str | None
    inputs: list[Tensor]
    outputs: list[str]
    flags: dict[str, bool]


def read_simple(body: bytes) -> SimpleRequest | None:
    """The request, if it is in the simple form; else None."""
    if len(body) < IN_PLACE_FROM_BYTES:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    elif body.startswith(_BOM):  # simdjson skips it; orjson, so MLServer, refuses the body
        return None
    else:
        root = _parsed(body)
        if root is None:
            return None
        document = _document(root, body)
    return simple_request(document, _may_hold_booleans(body))


def _parsed(body: bytes) -> Any:
    """The body as simdjson's proxies, or None when it is not JSON simdjson reads (not UTF-8, a
    number past 64 bits or a double's range). This thread's parser keeps its buffers from one body
    to the next; one that a proxy still holds (an error's traceback, say) is replaced."""
    for fresh in (False, True):
        parser: simdjson.Parser | None = None if fresh else getattr(_PARSERS, "parser", None)
        if parser is None:
            parser = _PARSERS.parser = simdjson.Parser()
        try:
            return parser.parse(body)
        except ValueError:
            return None
        except RuntimeError:  # a parser still in use, or an integer past 64 bits: a fresh one tells
            continue
    return None


def _document(root: Any, body: bytes) -> Any:
    """The parsed body as orjson gives it (duplicate keys: the last wins), but each numeric input's
    `data` a numpy array when it is a flat list of numbers."""
    if not isinstance(root, simdjson.Object) or _repeats_a_key(root):
        return _plain(root)
    document = {key: _plain(root[key]) for key in root.keys() if key != "inputs"}
    inputs = root.get("inputs")
    if isinstance(inputs, simdjson.Array):
        flat = _no_nested_lists(body, root, inputs)
        document["inputs"] = [_input(item, flat) for item in inputs]
    elif "inputs" in root:
        document["inputs"] = _plain(inputs)
    return document


def _no_nested_lists(body: bytes, root: simdjson.Object, inputs: simdjson.Array) -> bool:
    """Whether the body's only lists are the request's own: `inputs`, each input's `shape` and `data`,
    `outputs`. Each holds a '[', so a body with no more '[' than those holds no other list anywhere,
    nor one nested in any data (which as_buffer would read flattened)."""
    own = 1 + isinstance(root.get("outputs"), simdjson.Array)
    for item in inputs:
        if isinstance(item, simdjson.Object):
            own += isinstance(item.get("shape"), simdjson.Array) + isinstance(item.get("data"), simdjson.Array)
    return count_up_to(body, b"[", own + 1) <= own


def _input(item: Any, flat: bool) -> Any:
    if not flat or not isinstance(item, simdjson.Object) or _repeats_a_key(item):
        return _plain(item)
    return {key: _data(item) if key == "data" else _plain(item[key]) for key in item.keys()}


def _data(item: simdjson.Object) -> Any:
    """A numeric input's flat list of numbers as numpy reads it in place (float64 for a float
    datatype, int64 for an integer one, as np.asarray would give); any other data as a list, for the
    contract to check or explain."""
    data, datatype = item["data"], item.get("datatype")
    dtype = NUMERIC_DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None or not isinstance(data, simdjson.Array):
        return _plain(data)
    floats = dtype.kind == "f"
    try:
        buffer = data.as_buffer(of_type="d" if floats else "i")
    except (TypeError, ValueError):  # null, true/false or text among them; a fraction or past int64
        return data.as_list()
    return np.frombuffer(buffer, dtype=np.float64 if floats else np.int64)


def _repeats_a_key(value: simdjson.Object) -> bool:
    keys = list(value.keys())
    return len(set(keys)) != len(keys)


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def simple_request(document: Any, may_hold_booleans: bool = True) -> SimpleRequest | None:
    """A parsed request (runtime.edge.binary's: binary inputs' data already numpy arrays, or lists
    of str), if it is in the simple form; else None. Without `may_hold_booleans`, numeric JSON data
    becomes numpy arrays here."""
    if not isinstance(document, dict) or not document.keys() <= _REQUEST_KEYS:
        return None
    request_id = document.get("id")
    inputs = document.get("inputs")
    outputs = document.get("outputs", [])
    if (request_id is not None and not isinstance(request_id, str)) or not isinstance(inputs, list):
        return None
    tensors = [_tensor(i) for i in inputs]
    names = _output_names(outputs)
    parameters = document.get("parameters", {})
    if not tensors or None in tensors or names is None or not _simple_parameters(parameters):
        return None
    flags = {k: v for k, v in parameters.items() if k != _CONTENT_TYPE}
    if not may_hold_booleans:
        # No JSON boolean anywhere, so none among the numbers: the contract's check for them
        # (per value, in Python) is not needed once the data is a numpy array.
        tensors = [_as_array(t) for t in tensors]  # type: ignore[arg-type]
    return SimpleRequest(request_id, tensors, names, flags)  # type: ignore[arg-type]


def _may_hold_booleans(body: bytes) -> bool:
    """Whether `true` or `false` may be in the body. A byte is found with memchr, far faster than a
    word is found by a scan (docs/performance.md, "The fast path"); `true` holds an 'r' and `false` an
    'l', and the simple form's keys hold neither, so most bodies are cleared by the two bytes alone."""
    if b"r" in body and b"true" in body:
        return True
    return b"l" in body and b"false" in body


def _as_array(tensor: Tensor) -> Tensor:
    """A numeric tensor's data as numpy reads it, as the contract would; anything numpy does not
    read as numbers stays a list, for the contract to explain."""
    if tensor.datatype not in NUMERIC_DATATYPES:
        return tensor
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError):
        return tensor
    return Tensor(tensor.name, tensor.shape, tensor.datatype, array) if array.dtype.kind in "fiu" else tensor


def _simple_parameters(parameters: Any) -> bool:
    """Boolean flags and a string content type, nothing else."""
    if not isinstance(parameters, dict) or not parameters.keys() <= _FLAGS | {_CONTENT_TYPE}:
        return False
    return all(type(v) is str if k == _CONTENT_TYPE else type(v) is bool for k, v in parameters.items())


def _tensor(item: Any) -> Tensor | None:
    if not isinstance(item, dict) or item.keys() - {"parameters"} != _TENSOR_KEYS:
        return None
    parameters = item.get("parameters", {})
    if not _simple_parameters(parameters) or parameters.keys() & _FLAGS:  # a tensor's: a content type only
        return None
    name, shape, datatype, data = item["name"], item["shape"], item["datatype"], item["data"]
    if datatype == "BYTES" and isinstance(name, str):
        if not isinstance(data, list) or not all(_string_or_null(v) for v in data):
            return None
    elif not (isinstance(name, str) and isinstance(datatype, str) and datatype in NUMERIC_DATATYPES):
        return None
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        return None
    if not isinstance(data, list | np.ndarray):  # an array: a binary input's values (runtime.edge.binary)
        return None
    return Tensor(name, shape, datatype, data)


def _string_or_null(value: Any) -> bool:
    """A string column's element: a string or null, or a list of one (PandasCodec's [N, 1])."""
    if isinstance(value, list):
        return len(value) == 1 and (value[0] is None or isinstance(value[0], str))
    return value is None or isinstance(value, str)


def _output_names(outputs: Any) -> list[str] | None:
    if not isinstance(outputs, list):
        return None
    names = []
    for output in outputs:
        if not isinstance(output, dict) or output.keys() != {"name"} or not isinstance(output["name"], str):
            return None
        names.append(output["name"])
    return names
