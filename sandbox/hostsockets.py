"""The host's bound unix sockets, from the kernel's own list.

``/proc/net/unix`` lists every unix socket of the reader's network
namespace, and for a socket bound to a file its name, without walking any
tree: a socket under ``/opt`` or ten directories deep under ``$HOME`` is
there as much as one in ``/run``.  ``connect()`` works through a read-only
mount, so every such socket that the sandbox would see gets an empty file
mounted over it (``sandbox.discover``).

What the list does not give (and ``[sockets] scan`` still looks for by file
type): where a name means something else to us than to the program that
bound it (the kernel prints the name as it was given: a relative one like
"app.sock", one through ``/proc/self/fd/N/``, one inside a chroot or another
mount namespace, such as a container sharing the host's network), a socket
file renamed or moved after ``bind()`` (the list keeps the old name), and
sockets bound in another network namespace (a container's socket in a
directory the host shares with it: ``connect()`` by path reaches it from
anywhere).  Abstract sockets ("@name") need no mask at all: they belong to a
network namespace, and the sandbox has its own.

FIFOs are in no kernel list, and a FIFO's write end works through a
read-only mount as ``connect()`` does, so the search by file type stays for
them (and for the sockets above).  What keeps it cheap is not skipping it
but how a cached plan depends on it: the directories it walked are kept
with a digest of what each held (``sandbox.dirstamps``), and one that
changed (a settings file rewritten under ``~/.config`` every few hundred
milliseconds) is listed again with ``scandir`` and the plan kept unless a
FIFO or socket came or went (``sandbox.relist``).  Trusting only the FIFOs
present when the plan was made would let one made later be written
through; watching with inotify would need a process living between runs;
searching afresh on every run would cost the whole walk every time.

The kernel prints each record as ``%pK: %08X %08X %08X %04X %02X %5lu`` and
then the name byte for byte, with no escaping: a name holding a newline
continues on the next line, and what follows the newline may even look like
a record.  Names are at most 108 bytes (``sun_path``), so every way of
reading a record followed by the lines after it, up to that length, is a
candidate; the ones that are not real names are simply not sockets on disk.
"""

from __future__ import annotations

import os
import stat

SOURCE = "/proc/net/unix"
TAG = "hostsockets"  # marks this module's value among a plan's stamps (sandbox.observe)
MAX_NAME = 108  # sizeof(sun_path): a name, newlines included, is never longer


def read(source: str = SOURCE) -> bytes:
    """The list as the kernel prints it (empty when there is none, e.g. no /proc)."""
    try:
        with open(source, "rb", buffering=0) as fh:
            chunks = []
            while True:  # one read returns a page at most: read to the end
                chunk = fh.read(1 << 16)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
    except OSError:
        return b""


def _named(line: bytes) -> bytes | None:
    """The entry (inode and first line of the name) of a record with an absolute name.

    Loose on purpose: any line with seven fields before a name that starts
    with "/" counts, even one that is really the rest of another name.  That
    only adds candidates; every real record is always among them.
    """
    fields = line.split(None, 7)
    if len(fields) == 8 and fields[7][:1] == b"/" and fields[6].isdigit():
        return fields[6] + b" " + fields[7]
    return None


def listing_key(data: bytes) -> bytes:
    """The bound sockets with an absolute name, as one value a plan can keep.

    Each entry is the socket's inode number and the first line of its name:
    a new socket (a new inode) adds one, while connections coming and going
    (unnamed sockets, reference counts, states) and abstract or relative
    names change nothing.  Sorted: the kernel's order is its hash table's.
    """
    entries = [e for e in map(_named, data.split(b"\n")) if e is not None]
    entries.sort()
    return b"\0".join(entries)  # a name never holds a NUL byte


def _names_from(lines: list[bytes], i: int, entry: bytes):
    """The names record ``i`` may have: its first line, then with each next line added."""
    name = entry.split(b" ", 1)[1]
    yield name
    for j in range(i + 1, min(len(lines), i + MAX_NAME)):  # each line adds a byte at least
        name = name + b"\n" + lines[j]
        if len(name) > MAX_NAME:
            return
        yield name


def _lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the text ends with a newline
    return lines


def candidates(data: bytes) -> list[str]:
    """Every absolute name the list may be showing, newlines in names included."""
    lines = _lines(data)
    out: dict[str, None] = {}
    for i, line in enumerate(lines):
        entry = _named(line)
        if entry is not None:
            for name in _names_from(lines, i, entry):
                out[os.fsdecode(name)] = None
    return list(out)


def socket_at(name: str, resolved: dict[str, str] | None = None) -> str | None:
    """Where the socket called ``name`` really is (its directory resolved), if it is one now.

    A name bound through a symlinked directory is masked where the sandbox
    reaches it.  A name whose socket is gone, or was replaced by something
    else, gives None: there is nothing there to hide.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(name).st_mode):
            return None
    except (OSError, ValueError):
        return None
    parent, _, base = name.rpartition("/")
    parent = parent or "/"
    if resolved is None:
        return os.path.join(os.path.realpath(parent), base)
    if parent not in resolved:
        resolved[parent] = os.path.realpath(parent)
    return os.path.join(resolved[parent], base)


def bound_sockets(data: bytes) -> list[str]:
    """The real path of every socket the list names that is on disk now."""
    resolved: dict[str, str] = {}
    found = (socket_at(name, resolved) for name in candidates(data))
    return list(dict.fromkeys(p for p in found if p is not None))


def reachable(real: str, hidden, exposed) -> bool:
    """Would the sandbox see ``real``: not under a hidden directory, or re-exposed by a root."""
    def within(root: str) -> bool:
        return real == root or real.startswith(root.rstrip("/") + "/")

    return not any(within(h) for h in hidden) or any(within(r) for r in exposed)


def plan_value(data: bytes, hidden, exposed, empty_file: str) -> list:
    """What a plan records about the list (see ``appeared``); a list, unlike a stamp."""
    return [TAG, listing_key(data), tuple(hidden), tuple(exposed), empty_file]


def appeared(value, source: str = SOURCE) -> list[str]:
    """Sockets bound since a plan recorded ``value`` that the sandbox would reach.

    The usual answer costs one read of the list: nothing was bound or closed.
    Otherwise only the new entries are looked at, and one that is not a
    socket on disk, or lies where the sandbox cannot see it (a socket bound
    in /run or /tmp), costs nothing more.  A closed socket is no concern: a
    mask over a socket file that went away is dropped before bwrap starts
    (``sandbox.linux.drift``).
    """
    _tag, key, hidden, exposed, _empty = value
    data = read(source)
    if listing_key(data) == key:
        return []
    known = set(key.split(b"\0"))
    lines = _lines(data)
    resolved: dict[str, str] = {}
    found: dict[str, None] = {}
    for i, line in enumerate(lines):
        entry = _named(line)
        if entry is None or entry in known:
            continue
        for name in _names_from(lines, i, entry):
            real = socket_at(os.fsdecode(name), resolved)
            if real is not None and reachable(real, hidden, exposed):
                found[real] = None
    return list(found)
