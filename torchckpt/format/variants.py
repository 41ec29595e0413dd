"""``DT_VARIANT`` payloads (``tensor_bundle.cc`` ``WriteVariantTensor`` / ``ReadVariantTensor``).

A ``tf.data`` iterator tracked by a ``tf.train.Checkpoint`` is saved as a
``DT_VARIANT`` tensor (``<path>/.ATTRIBUTES/ITERATOR_STATE``). torch has no type
for such values, so torchckpt never decodes them; it only verifies their bytes.

On-disk format for ``n`` elements::

    [varint64 len_0][len_0 bytes: VariantTensorDataProto][fixed32 C_0] ... (n times)

The running checksum ``crc`` starts at 0 and is extended, per element, with the
length as a fixed-width little-endian **uint64** (8 bytes, *not* the varint),
then the element's bytes; ``C_i = mask(crc)`` is written and ``crc`` is then
extended with those 4 bytes. The entry's ``crc32c`` is ``mask(crc)`` after the
last element, so, as for strings, it is not the CRC of the file bytes.
"""

from __future__ import annotations

from . import _crc32c
from ._coding import ChecksumDecodeError, DecodeError, get_fixed32, get_varint

_U64 = 8


def variant_crc32c(payload: bytes | memoryview, count: int) -> int:
    """The unmasked CRC32C TensorFlow computes over ``count`` variant elements.

    Walks the payload element by element, checking each element's own stored
    checksum on the way, so a damaged payload fails at its first bad element.

    Raises:
        DecodeError: the payload ends early, has bytes left over, or a length
            runs past its end.
        ChecksumDecodeError: an element's stored checksum does not match.
    """
    view = memoryview(payload).cast("B")
    limit = len(view)
    pos = crc = 0
    for i in range(count):
        if pos >= limit:
            raise DecodeError(f"payload ends before variant element {i} of {count}", pos)
        length, pos = get_varint(view, pos, limit)
        if length > limit - pos:
            raise DecodeError(f"variant element {i} of {length} bytes runs past the payload's "
                              "end", pos)
        crc = _crc32c.extend(crc, length.to_bytes(_U64, "little"))
        crc = _crc32c.extend(crc, view[pos:pos + length])
        pos += length
        stored = get_fixed32(view, pos, limit)
        if stored != _crc32c.mask(crc):
            raise ChecksumDecodeError(f"checksum mismatch after variant element {i} (stored "
                                      f"0x{stored:08x}, computed 0x{_crc32c.mask(crc):08x})", pos)
        crc = _crc32c.extend(crc, view[pos:pos + 4])
        pos += 4
    if pos != limit:
        raise DecodeError(f"{limit - pos} bytes left after {count} variant elements", pos)
    return crc
