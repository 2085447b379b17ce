"""Shared test helpers (importable from tests: pytest puts this folder on sys.path)."""
import os.path as osp
import struct
import zlib

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says ``width x height`` (8-bit RGB) but that has no pixel data: what
    a decoder would allocate is known from the header alone."""
    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IEND', b'')
