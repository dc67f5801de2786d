# SPDX-License-Identifier: MIT
"""A small, self-written reader and writer of the safetensors format, for golden data.

The `safetensors` package is not installed here, so the tools write their files with this
module. Layout (the reference format, docs/ and spec/model-format.md section 1):

    [8 bytes: N, little-endian u64][N bytes: JSON header, padded with spaces][data]

The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the start of the data section), plus an optional "__metadata__"
object of str -> str. As the reference writer does, tensors are laid out contiguously
sorted by element size (largest first), then by name, so their byte ranges tile the data
section exactly; and 8 + N is a multiple of 8, so the data starts 8-byte aligned and
every tensor is aligned for its element type (zero-copy readers rely on it).

    save_file({"a": torch.zeros(2, 3)}, "x.safetensors", metadata={"k": "v"})
    load_file("x.safetensors")  # -> {"a": numpy.ndarray float32 (2, 3)}

load_file returns numpy arrays; numpy has no bfloat16, so BF16 tensors are returned
as float32 (exactly: every bfloat16 is a float32). load_file_raw gives the raw bytes.
"""

import json
import struct

import numpy as np

# dtype name -> (numpy dtype, element size in bytes). BF16 is stored as its 16-bit pattern.
_NUMPY = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

_FROM_NUMPY = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def _to_dtype_and_bytes(value):
    """(dtype name, shape, little-endian bytes) of a torch tensor or numpy array."""
    try:
        import torch  # optional: only needed for torch inputs
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        shape = list(t.shape)
        if t.dtype == torch.bfloat16:
            # the 16-bit pattern of each bfloat16, as numpy cannot hold bfloat16
            bits = t.view(torch.int16).numpy().astype("<i2")
            return "BF16", shape, bits.tobytes()
        value = t.numpy()
    arr = np.asarray(value)
    arr = np.ascontiguousarray(arr).reshape(arr.shape)  # ascontiguousarray makes 0-d 1-d
    if arr.dtype not in _FROM_NUMPY:
        raise TypeError(f"unsupported dtype {arr.dtype}")
    name = _FROM_NUMPY[arr.dtype]
    return name, list(arr.shape), arr.astype(_NUMPY[name], copy=False).tobytes()


class Raw:
    """A tensor given as (dtype name, shape, raw little-endian bytes), e.g. BF16 bit patterns."""

    def __init__(self, dtype, shape, data):
        if dtype not in _NUMPY:
            raise ValueError(f"unknown dtype {dtype}")
        self.dtype, self.shape, self.data = dtype, list(shape), bytes(data)


def serialize(tensors, metadata=None):
    """The bytes of a safetensors file holding `tensors` (name -> tensor, array or Raw)."""
    header = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    entries = []
    for name, v in tensors.items():
        if name == "__metadata__":
            raise ValueError("__metadata__ is not a tensor name")
        if isinstance(v, Raw):
            entries.append((name, v.dtype, v.shape, v.data))
        else:
            entries.append((name, *_to_dtype_and_bytes(v)))
    # largest element first, then by name: each tensor starts aligned for its type
    entries.sort(key=lambda e: (-_NUMPY[e[1]].itemsize, e[0]))
    chunks = []
    offset = 0
    for name, dtype, shape, data in entries:
        count = 1
        for d in shape:
            count *= d
        if count * _NUMPY[dtype].itemsize != len(data):
            raise ValueError(f"{name}: {len(data)} bytes for {dtype} {shape}")
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    # compact, keys sorted, UTF-8 as is: byte for byte what relpos's C++ writer emits
    text = json.dumps(header, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % 8)  # the data section starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save_file(tensors, path, metadata=None):
    """Write `tensors` (name -> torch.Tensor | numpy.ndarray | Raw) to `path`."""
    data = serialize(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)


def parse(data):
    """(header dict without __metadata__, metadata dict, data section bytes), validated."""
    if len(data) < 8:
        raise ValueError("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"header length {n} beyond the file ({len(data)} bytes)")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    body = data[8 + n:]
    ranges = []
    for name, e in header.items():
        dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
        count = 1
        for d in shape:
            count *= d
        if not (0 <= begin <= end <= len(body)):
            raise ValueError(f"{name}: data_offsets {[begin, end]} outside the data section")
        if (end - begin) != count * _NUMPY[dtype].itemsize:
            raise ValueError(f"{name}: {end - begin} bytes for {dtype} {shape}")
        ranges.append((begin, end))
    pos = 0
    for begin, end in sorted(ranges):
        if begin != pos:
            raise ValueError("byte ranges do not tile the data section")
        pos = end
    if pos != len(body):
        raise ValueError("trailing bytes after the last tensor")
    return header, metadata, body


def load_file_raw(path):
    """name -> (dtype name, shape, bytes), and the metadata dict."""
    with open(path, "rb") as f:
        header, metadata, body = parse(f.read())
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        out[name] = (e["dtype"], list(e["shape"]), body[begin:end])
    return out, metadata


def bf16_bits_to_float32(bits):
    """Exact float32 values of bfloat16 bit patterns (uint16 array)."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def load_file(path):
    """name -> numpy.ndarray (BF16 returned as float32, exactly)."""
    raw, _ = load_file_raw(path)
    out = {}
    for name, (dtype, shape, data) in raw.items():
        arr = np.frombuffer(data, dtype=_NUMPY[dtype]).reshape(shape)
        if dtype == "BF16":
            arr = bf16_bits_to_float32(arr).reshape(shape)
        out[name] = arr.copy()
    return out


def load_metadata(path):
    """The __metadata__ dict of a file ({} when absent)."""
    return load_file_raw(path)[1]
