"""What content a git repository already holds, read defensively on the host.

A secret-named file (``.env``) that git tracks must not be masked as an empty
file: git inside the sandbox would see it modified, and ``commit -a``,
``stash`` or a failed checkout would record the empty mask as its content
(see ``sandbox.secretfiles``).  Whether git "already holds" some content is
decided here, from the object store alone.

Everything under ``.git`` may have been written by an earlier sandboxed
command, so nothing read here is trusted by name: an object counts only if
the bytes we rebuild from the store (a loose object, or a pack entry and its
delta chain) hash to the id we asked for.  A command that does not know a
secret cannot make the store "hold" it: it would need content whose hash is
the secret's blob id, which it cannot compute without the content.  Every
read is bounded, never follows a symlink and never opens anything but a
regular file; anything unexpected means "not held".

The index (``.git/index``) is only used to find which blob git has staged
for a path; whatever it names is then read from the store like any object,
so a forged index can only make us show content the store already holds.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib

MAX_OBJECT = 16 << 20  # a delta base larger than this is not rebuilt
MAX_INFLATE = 64 << 20  # total bytes inflated for one object, delta chain included
MAX_DEPTH = 4096  # git refuses deeper delta chains itself (pack.depth <= 4095)
MAX_INDEX = 64 << 20  # a bigger .git/index is not searched
HASHES = {20: hashlib.sha1, 32: hashlib.sha256}
_TYPES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
_OFS_DELTA, _REF_DELTA = 6, 7
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Bad(Exception):
    """The store does not hold what we asked for in a form we accept."""


def blob_ids(content: bytes) -> tuple[bytes, ...]:
    """The blob ids of ``content`` in SHA-1 and SHA-256 repositories."""
    data = b"blob %d\0" % len(content) + content
    return tuple(h(data).digest() for h in HASHES.values())


def _open_file(name: str, dir_fd: int | None) -> tuple[int, int]:
    """(fd, size) of a regular file, never through a symlink; raises _Bad."""
    try:
        fd = os.open(name, _FLAGS, dir_fd=dir_fd)
    except OSError:
        raise _Bad from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Bad
    return fd, st.st_size


def read_regular(path: str, limit: int) -> bytes | None:
    """The bytes of a regular file of at most ``limit`` bytes (not through a link)."""
    try:
        fd, size = _open_file(path, None)
    except _Bad:
        return None
    try:
        if size > limit:
            return None
        data = os.pread(fd, size + 1, 0)
        return data if len(data) == size else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _inflate(fd: int, offset: int, size: int, budget: list[int]) -> bytes:
    """Inflate the zlib stream at ``offset`` that must give exactly ``size`` bytes."""
    if size > MAX_OBJECT or size > budget[0]:
        raise _Bad
    budget[0] -= size
    d = zlib.decompressobj()
    out = bytearray()
    # deflate never grows data by more than a few bytes per 16 KiB block
    limit = offset + size + size // 64 + 1024
    while not d.eof:
        if offset >= limit:
            raise _Bad
        try:
            chunk = os.pread(fd, min(1 << 16, limit - offset), offset)
            if not chunk:
                raise _Bad
            offset += len(chunk)
            out += d.decompress(chunk, size + 1 - len(out))
        except (OSError, zlib.error):
            raise _Bad from None
        if d.unconsumed_tail or len(out) > size:
            raise _Bad
    if len(out) != size:
        raise _Bad
    return bytes(out)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Bad
        c = data[pos]
        pos += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return value, pos


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """Git's delta format: source size, result size, then copy and insert opcodes."""
    src_size, pos = _varint(delta, 0)
    dst_size, pos = _varint(delta, pos)
    if src_size != len(base) or dst_size > MAX_OBJECT:
        raise _Bad
    out = bytearray()
    n = len(delta)
    while pos < n:
        op = delta[pos]
        pos += 1
        if op & 0x80:  # copy from the base: offset and size bytes follow as the bits say
            off = size = 0
            for i in range(4):
                if op & (1 << i):
                    if pos >= n:
                        raise _Bad
                    off |= delta[pos] << (8 * i)
                    pos += 1
            for i in range(3):
                if op & (0x10 << i):
                    if pos >= n:
                        raise _Bad
                    size |= delta[pos] << (8 * i)
                    pos += 1
            size = size or 0x10000
            if off + size > len(base):
                raise _Bad
            out += base[off:off + size]
        elif op:  # insert the next ``op`` bytes
            if pos + op > n:
                raise _Bad
            out += delta[pos:pos + op]
            pos += op
        else:
            raise _Bad
        if len(out) > dst_size:
            raise _Bad
    if len(out) != dst_size:
        raise _Bad
    return bytes(out)


class _PackIndex:
    """One ``pack-*.idx`` (version 2) and its ``.pack``, looked up with pread."""

    def __init__(self, idx_fd: int, idx_size: int, pack_fd: int, pack_size: int,
                 hash_len: int) -> None:
        self.fd, self.pack_fd, self.pack_size, self.hash_len = idx_fd, pack_fd, pack_size, hash_len
        head = os.pread(idx_fd, 8 + 1024, 0)
        if len(head) != 1032 or head[:8] != b"\xfftOc\x00\x00\x00\x02":
            raise _Bad
        self.fanout = [int.from_bytes(head[8 + 4 * i:12 + 4 * i], "big") for i in range(256)]
        self.count = n = self.fanout[255]
        # ids, crc32s, 4-byte offsets, 8-byte offsets, two trailing checksums
        rest = idx_size - 1032 - n * (hash_len + 8) - 2 * hash_len
        if rest < 0 or rest % 8 or any(a > b for a, b in zip(self.fanout, self.fanout[1:])):
            raise _Bad
        self.large = rest // 8
        if os.pread(pack_fd, 8, 0) not in (b"PACK\x00\x00\x00\x02", b"PACK\x00\x00\x00\x03"):
            raise _Bad
        # the idx ends with the pack's own checksum: this is how long ids are
        trailer = os.pread(pack_fd, hash_len, pack_size - hash_len)
        if pack_size < 12 + hash_len or trailer != os.pread(idx_fd, hash_len, idx_size - 2 * hash_len):
            raise _Bad

    def offset(self, oid: bytes) -> int | None:
        """Where ``oid`` starts in the pack, or None."""
        h = self.hash_len
        lo = self.fanout[oid[0] - 1] if oid[0] else 0
        hi = self.fanout[oid[0]]
        if hi - lo > 1 << 22:
            raise _Bad
        ids = os.pread(self.fd, (hi - lo) * h, 1032 + lo * h)
        if len(ids) != (hi - lo) * h:
            raise _Bad
        a, b = 0, hi - lo
        while a < b:  # the ids of one fanout bucket are sorted
            mid = (a + b) // 2
            probe = ids[mid * h:(mid + 1) * h]
            if probe == oid:
                break
            if probe < oid:
                a = mid + 1
            else:
                b = mid
        else:
            return None
        i = lo + mid
        n = self.count
        raw = int.from_bytes(os.pread(self.fd, 4, 1032 + n * (h + 4) + 4 * i), "big")
        if raw & 0x80000000:
            j = raw & 0x7FFFFFFF
            if j >= self.large:
                raise _Bad
            raw = int.from_bytes(os.pread(self.fd, 8, 1032 + n * (h + 8) + 8 * j), "big")
        if not 12 <= raw < self.pack_size:
            raise _Bad
        return raw


class Store:
    """A repository's ``objects`` directory, opened without following links.

    ``note(path, full)`` is called for every file or directory whose state
    the answer depends on (``sandbox.observe.Observer.note``), so a cached
    plan is rebuilt when one of them changes.
    """

    def __init__(self, objects_dir: str, note=None) -> None:
        self.path = objects_dir
        self.note = note or (lambda path, full=False: None)
        self._packs: list | None = None
        self._fds: list[int] = []

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self._packs = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _dir(self, rel: str) -> int:
        try:
            return self._keep(os.open(os.path.join(self.path, rel), os.O_RDONLY | os.O_DIRECTORY
                                      | os.O_NOFOLLOW | os.O_CLOEXEC))
        except OSError:
            raise _Bad from None

    def read(self, oid: bytes) -> tuple[bytes, bytes] | None:
        """(type, content) of object ``oid``, rebuilt and checked against its id."""
        if len(oid) not in HASHES:
            return None
        budget = [MAX_INFLATE]
        for source in (self._loose, self._packed):
            try:
                found = source(oid, budget)
            except (_Bad, OSError):
                found = None
            if found is not None:
                kind, data = found
                if HASHES[len(oid)](b"%s %d\0" % (kind, len(data)) + data).digest() == oid:
                    return kind, data
        return None

    def holds_blob(self, content: bytes) -> bool:
        """Does the store hold ``content`` as a blob (under the SHA-1 or SHA-256 id)?"""
        return any(self.read(oid) == (b"blob", content) for oid in blob_ids(content))

    def _loose(self, oid: bytes, budget: list[int]) -> tuple[bytes, bytes] | None:
        hexid = oid.hex()
        # stamped present or absent: the object appearing later changes the answer
        self.note(os.path.join(self.path, hexid[:2], hexid[2:]), True)
        fd, size = _open_file(hexid[2:], self._dir(hexid[:2]))
        self._keep(fd)
        if size > MAX_OBJECT + 1024:
            raise _Bad
        d = zlib.decompressobj()
        try:
            data = d.decompress(os.pread(fd, size, 0), MAX_OBJECT + 64)
        except zlib.error:
            raise _Bad from None
        if not d.eof or d.unconsumed_tail:
            raise _Bad
        kind, sp, rest = data.partition(b" ")
        length, nul, body = rest.partition(b"\0")
        if not sp or not nul or not length.isdigit() or int(length) != len(body):
            raise _Bad
        budget[0] -= len(body)
        return kind, body

    def packs(self) -> list[_PackIndex]:
        if self._packs is None:
            self._packs = []
            pack_dir = os.path.join(self.path, "pack")
            self.note(pack_dir, True)  # a new pack changes its listing
            try:
                dfd = self._dir("pack")
                names = sorted(os.listdir(dfd))
            except (_Bad, OSError):
                return self._packs
            for name in names[:2000]:
                if not (name.startswith("pack-") and name.endswith(".idx")):
                    continue
                pack_name = name[:-4] + ".pack"
                try:
                    idx_fd, idx_size = _open_file(name, dfd)
                    self._keep(idx_fd)
                    pack_fd, pack_size = _open_file(pack_name, dfd)
                    self._keep(pack_fd)
                except _Bad:
                    continue
                for hash_len in HASHES:
                    try:
                        self._packs.append(_PackIndex(idx_fd, idx_size, pack_fd, pack_size,
                                                      hash_len))
                        self.note(os.path.join(pack_dir, name), True)
                        self.note(os.path.join(pack_dir, pack_name), True)
                        break
                    except (_Bad, OSError):
                        continue
        return self._packs

    def _packed(self, oid: bytes, budget: list[int]) -> tuple[bytes, bytes] | None:
        for pack in self.packs():
            if pack.hash_len != len(oid):
                continue
            offset = pack.offset(oid)
            if offset is not None:
                return self._unpack(pack, offset, budget)
        return None

    def _unpack(self, pack: _PackIndex, offset: int, budget: list[int]) -> tuple[bytes, bytes]:
        """The object at ``offset``, its delta chain resolved (iteratively, bounded)."""
        deltas: list[bytes] = []
        seen: set[int] = set()
        while True:
            if len(deltas) > MAX_DEPTH or offset in seen:
                raise _Bad
            seen.add(offset)
            head = os.pread(pack.pack_fd, 16 + pack.hash_len, offset)
            if not head:
                raise _Bad
            c = head[0]
            kind, size, shift, pos = (c >> 4) & 7, c & 15, 4, 1
            while c & 0x80:
                if pos >= len(head) or shift > 60:
                    raise _Bad
                c = head[pos]
                size |= (c & 0x7F) << shift
                shift += 7
                pos += 1
            if kind in _TYPES:
                data = _inflate(pack.pack_fd, offset + pos, size, budget)
                break
            if kind == _OFS_DELTA:  # base at a smaller offset, big-endian base-128 "minus one"
                c = head[pos]
                back = c & 0x7F
                pos += 1
                while c & 0x80:
                    if pos >= len(head):
                        raise _Bad
                    c = head[pos]
                    back = ((back + 1) << 7) | (c & 0x7F)
                    pos += 1
                deltas.append(_inflate(pack.pack_fd, offset + pos, size, budget))
                if not 0 < back < offset:
                    raise _Bad
                offset -= back
            elif kind == _REF_DELTA:  # base named by id: in this pack, or a loose object
                base_id = head[pos:pos + pack.hash_len]
                if len(base_id) != pack.hash_len:
                    raise _Bad
                deltas.append(_inflate(pack.pack_fd, offset + pos + pack.hash_len, size, budget))
                base_offset = pack.offset(base_id)
                if base_offset is None:
                    loose = self._loose(base_id, budget)
                    if loose is None:
                        raise _Bad
                    kind_name, data = loose
                    return kind_name, _resolve(data, deltas)
                offset = base_offset
            else:
                raise _Bad
        return _TYPES[kind], _resolve(data, deltas)


def _resolve(base: bytes, deltas: list[bytes]) -> bytes:
    for delta in reversed(deltas):  # the last delta read applies to the base first
        base = apply_delta(base, delta)
    return base


# -- the index: which blob git has staged for a path -------------------------------

_MODES = (0o100644, 0o100755)


def staged_blob(index_path: str, rel: bytes, note=None) -> bytes | None:
    """The stage-0 blob id ``index_path`` records for ``rel`` (a regular file), or None.

    Versions 2 and 3 keep each path whole and 8-byte aligned, so the entry is
    found with one ``find`` and checked in place (alignment, name length,
    mode) rather than by walking every entry in Python; version 4 compresses
    paths and is walked.  Of a split index only the main file is searched:
    an entry kept in the shared index is not found (None).
    """
    data = read_regular(index_path, MAX_INDEX)
    if note is not None:
        note(index_path, True)
    if data is None or len(data) < 12 or data[:4] != b"DIRC":
        return None
    version = int.from_bytes(data[4:8], "big")
    for hash_len in HASHES:
        if version in (2, 3):
            found = _find_v2(data, rel, hash_len, version)
        elif version == 4:
            found = _walk_v4(data, rel, hash_len)
        else:
            return None
        if found is not None:
            return found
    return None


def _check_entry(data: bytes, start: int, flags: int, rel: bytes, hash_len: int) -> bytes | None:
    if start < 12:
        return None
    mode = int.from_bytes(data[start + 24:start + 28], "big")
    if mode not in _MODES or (flags >> 12) & 3 or (flags & 0xFFF) != min(len(rel), 0xFFF):
        return None
    return data[start + 40:start + 40 + hash_len]


def _find_v2(data: bytes, rel: bytes, hash_len: int, version: int) -> bytes | None:
    needle = rel + b"\0"
    pos = data.find(needle, 12)
    while pos != -1:
        flags = int.from_bytes(data[pos - 2:pos], "big")
        start = pos - 2 - hash_len - 40
        if not flags & 0x4000 and (start - 12) % 8 == 0:
            oid = _check_entry(data, start, flags, rel, hash_len)
            if oid is not None:
                return oid
        if version == 3:  # extended flags sit between the flags and the path
            flags = int.from_bytes(data[pos - 4:pos - 2], "big")
            ext = int.from_bytes(data[pos - 2:pos], "big")
            start = pos - 4 - hash_len - 40
            if flags & 0x4000 and not ext & 0x2000 and (start - 12) % 8 == 0:  # not intent-to-add
                oid = _check_entry(data, start, flags, rel, hash_len)
                if oid is not None:
                    return oid
        pos = data.find(needle, pos + 1)
    return None


def _walk_v4(data: bytes, rel: bytes, hash_len: int) -> bytes | None:
    count = int.from_bytes(data[8:12], "big")
    pos, prev = 12, b""
    end = len(data) - hash_len
    for _ in range(count):
        if pos + 40 + hash_len + 2 > end:
            return None
        mode = int.from_bytes(data[pos + 24:pos + 28], "big")
        oid = data[pos + 40:pos + 40 + hash_len]
        fpos = pos + 40 + hash_len
        flags = int.from_bytes(data[fpos:fpos + 2], "big")
        fpos += 2
        ext = 0
        if flags & 0x4000:
            ext = int.from_bytes(data[fpos:fpos + 2], "big")
            fpos += 2
        try:
            strip, fpos = _varint_v4(data, fpos)
        except _Bad:
            return None
        nul = data.find(b"\0", fpos)
        if nul == -1 or strip > len(prev):
            return None
        path = prev[:len(prev) - strip] + data[fpos:nul]
        if path == rel:
            if mode in _MODES and not (flags >> 12) & 3 and not ext & 0x2000:
                return oid
        elif path > rel:
            return None  # entries are sorted by path
        prev, pos = path, nul + 1
    return None


def _varint_v4(data: bytes, pos: int) -> tuple[int, int]:
    """The offset encoding of index v4 (the same as a pack's OFS_DELTA)."""
    if pos >= len(data):
        raise _Bad
    c = data[pos]
    value = c & 0x7F
    pos += 1
    while c & 0x80:
        if pos >= len(data):
            raise _Bad
        c = data[pos]
        value = ((value + 1) << 7) | (c & 0x7F)
        pos += 1
    return value, pos
