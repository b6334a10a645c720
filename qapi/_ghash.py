"""Iteration order of a glib ``GHashTable`` of strings (mirrors glib's ``ghash.c``).

Pure data structure, used by the input visitor in whichever thread visits.

Why this exists: when a command's arguments hold more than one unknown
member, QEMU reports the first one that its *unvisited-keys* table yields.
That table is a ``GHashTable`` keyed with ``g_str_hash``, filled in QDict order
and emptied as members are visited (``qobject-input-visitor.c``), so the member
named depends on glib's open-addressing layout, not on the QDict's.  Only
positions matter here, so this keeps keys and hashes and drops the values.

Algorithm of glib 2.60 and later (the one QEMU 7.2 links against on current
distributions): the start slot is ``(hash * 11) % prime_mod[shift]``, probing
is triangular modulo the power-of-two size, removal leaves a tombstone, and a
resize re-places entries in place, evicting as it goes.  Checked against a
real QEMU 7.2 on hundreds of random key sets (tests/qapi/test_visitor_order.py).
"""

from __future__ import annotations

from collections.abc import Iterator

_U32 = 0xFFFFFFFF
_MIN_SHIFT = 3
_UNUSED = 0
_TOMBSTONE = 1
# The largest prime below each power of two, as glib's ``prime_mod`` table.
_PRIME_MOD = (1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521)


def g_str_hash(key: str) -> int:
    """glib's djb2 string hash, over the key's bytes read as *signed* chars.

    The bytes are QEMU's: UTF-8, with U+0000 as the two bytes C0 80, the way
    its JSON parser stores a string.
    """
    value = 5381
    for byte in key.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80"):
        signed = byte - 256 if byte >= 128 else byte
        value = (value * 33 + signed) & _U32
    return value


def _closest_shift(n: int) -> int:
    shift = 0
    while n:
        n >>= 1
        shift += 1
    return max(shift, _MIN_SHIFT)


class GStrHashSet:
    """A string set laid out exactly as a ``GHashTable`` with ``g_str_hash``."""

    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self._hashes = [_UNUSED] * self._size
        self._keys: list[str | None] = [None] * self._size
        self._nnodes = 0
        self._noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self._size = 1 << shift
        self._mod = _PRIME_MOD[shift]
        self._mask = self._size - 1

    def _hash_to_index(self, key_hash: int) -> int:
        return ((key_hash * 11) & _U32) % self._mod

    def _lookup(self, key: str) -> tuple[int, int]:
        """Slot holding ``key``, else the first tombstone or empty slot met."""
        key_hash = max(g_str_hash(key), 2)
        index = self._hash_to_index(key_hash)
        step = 0
        tombstone = None
        while self._hashes[index] != _UNUSED:
            if self._hashes[index] == key_hash and self._keys[index] == key:
                return index, key_hash
            if self._hashes[index] == _TOMBSTONE and tombstone is None:
                tombstone = index
            step += 1
            index = (index + step) & self._mask
        return (index if tombstone is None else tombstone), key_hash

    def add(self, key: str) -> None:
        index, key_hash = self._lookup(key)
        old_hash = self._hashes[index]
        if old_hash > _TOMBSTONE:
            return
        self._hashes[index] = key_hash
        self._keys[index] = key
        self._nnodes += 1
        if old_hash == _UNUSED:
            self._noccupied += 1
            self._maybe_resize()

    def discard(self, key: str) -> None:
        index, _ = self._lookup(key)
        if self._hashes[index] <= _TOMBSTONE:
            return
        self._hashes[index] = _TOMBSTONE
        self._keys[index] = None
        self._nnodes -= 1
        self._maybe_resize()

    def __iter__(self) -> Iterator[str]:
        for key_hash, key in zip(self._hashes, self._keys):
            if key_hash > _TOMBSTONE:
                assert key is not None
                yield key

    def __len__(self) -> int:
        return self._nnodes

    def _maybe_resize(self) -> None:
        too_sparse = self._size > self._nnodes * 4 and self._size > 1 << _MIN_SHIFT
        too_full = self._size <= self._noccupied + self._noccupied // 16
        if too_sparse or too_full:
            self._resize()

    def _resize(self) -> None:
        old_size = self._size
        self._set_shift(_closest_shift(int(self._nnodes * 1.333)))
        if self._size > old_size:
            self._hashes += [_UNUSED] * (self._size - old_size)
            self._keys += [None] * (self._size - old_size)
        placed = [False] * max(self._size, old_size)
        for i in range(old_size):
            self._relocate(i, placed)
        del self._hashes[self._size :]
        del self._keys[self._size :]
        self._noccupied = self._nnodes

    def _relocate(self, i: int, placed: list[bool]) -> None:
        """Move the entry at ``i`` to its new home, evicting a chain as glib does."""
        node_hash = self._hashes[i]
        if node_hash <= _TOMBSTONE:
            self._hashes[i] = _UNUSED
            return
        if placed[i]:
            return
        self._hashes[i] = _UNUSED
        key, self._keys[i] = self._keys[i], None
        while True:
            index = self._hash_to_index(node_hash)
            step = 0
            while placed[index]:
                step += 1
                index = (index + step) & self._mask
            placed[index] = True
            replaced_hash = self._hashes[index]
            self._hashes[index] = node_hash
            key, self._keys[index] = self._keys[index], key
            if replaced_hash <= _TOMBSTONE:
                return
            node_hash = replaced_hash
