"""What kind of file a user handed in as weights or as a model, told from its bytes (nothing is loaded).

Used to refuse, in one line, a file that is not what was expected: an ONNX model, a
TorchScript archive, a safetensors file, an empty or truncated download, or a pickled
whole model where a plain state_dict was asked for.
"""

from __future__ import annotations

import zipfile
from enum import Enum
from pathlib import Path


class FileKind(Enum):
    EMPTY = "an empty file"
    TORCHSCRIPT = "a TorchScript archive"
    TORCH = "a torch.save file"  # zip format; a state_dict or a pickled object
    TORCH_LEGACY = "a torch.save file in the legacy format"  # a pickle stream
    ONNX = "an ONNX model"
    SAFETENSORS = "a safetensors file"
    ZIP = "a zip archive"
    TRUNCATED = "a truncated or damaged zip archive"  # torch.save's format, cut short
    UNKNOWN = "not a torch file"


def _is_safetensors(head: bytes, size: int) -> bool:
    # 8 bytes little-endian header length, then a JSON object of that length.
    if len(head) < 9:
        return False
    header = int.from_bytes(head[:8], "little")
    return 2 <= header <= size - 8 and head[8:9] == b"{"


def _is_onnx(path: Path, head: bytes) -> bool:
    # A ModelProto starts with ir_version (field 1, varint: byte 0x08); parsing is protobuf, not code.
    if head[:1] != b"\x08":
        return False
    import onnx

    try:
        document = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return bool(document.graph.node) or bool(document.opset_import)


def file_kind(path: Path) -> FileKind:
    """The kind of the (existing, regular) file at ``path``."""
    size = path.stat().st_size
    if size == 0:
        return FileKind.EMPTY
    with open(path, "rb") as handle:
        head = handle.read(64)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return FileKind.UNKNOWN
        if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
            return FileKind.TORCHSCRIPT
        if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return FileKind.TORCH
        return FileKind.ZIP
    if head[:4] == b"PK\x03\x04":  # a zip's first entry without its closing directory
        return FileKind.TRUNCATED
    if head[:1] == b"\x80":  # a pickle protocol mark: torch's legacy format starts with a pickled magic number
        return FileKind.TORCH_LEGACY
    if _is_safetensors(head, size):
        return FileKind.SAFETENSORS
    if _is_onnx(path, head):
        return FileKind.ONNX
    return FileKind.UNKNOWN
