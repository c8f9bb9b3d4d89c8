"""The private terminal between the caller's terminal and the command.

The caller's terminal is never handed to the command (``runner.run``
decides when this is needed and spawns; nothing here starts a process).
``Relay`` copies bytes between the caller's terminal and the pty the
command holds, so that the command sees a terminal of its own while the
caller's stays out of reach: it cannot read what the user types (unless
stdin is the terminal, and then only through this copy), change the caller's
terminal modes or size, or push keystrokes into it.
"""

from __future__ import annotations

import errno
import os
import select
import time


def copy_winsize(src: int, dst: int) -> None:
    """The caller's terminal size (``src``) onto the command's pty."""
    import fcntl
    import termios

    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def output_only(slave: int) -> None:
    """The pty of a command whose stdin is not a terminal: output passes as written.

    Nothing is ever typed into it, and the caller's terminal is left in its
    own (cooked) mode, which already turns a newline into CR LF; without
    OPOST the pty adds nothing, so the caller sees exactly the bytes it would
    have seen with the command writing to the terminal itself.
    """
    import termios

    try:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
    except termios.error:
        pass


# How long the command's pty must be quiet (no input written, no output seen)
# before an end-of-file typed or piped after other input is passed on: see
# Relay._caught_up.
QUIET_RAW = 0.05
QUIET_COOKED = 0.25


class Relay:
    """Copy bytes between the caller's terminal and the command's private pty.

    ``stdin`` is the caller's terminal on fd 0, or None when fd 0 is not a
    terminal (the command then reads fd 0 itself, and nothing typed is ever
    read here); ``tty`` is a terminal fd of the caller's, for the window
    size.  Output goes to fd 1 if that is a terminal, else to fd 2.

    Input must arrive as it would on the caller's terminal itself, which
    takes three things (``printf 'print(1+1)\\n' | script -qc 'sandbox run --
    python3'`` needs all of them):

    * the switch to raw mode keeps what is already queued (TCSANOW; the
      usual TCSAFLUSH would drop keys typed, or bytes piped, while the run
      starts);
    * what the terminal holds in cooked mode is read *before* that switch:
      an end-of-file (Ctrl-D) typed there is a marker that raw mode turns
      into a NUL byte, so it is read as end-of-file and passed on as the
      command pty's own EOF character;
    * that EOF character is held back until the command has read the input
      before it (``slave`` is kept to look): written into a pty ahead of a
      program that switches it to raw mode later (Python's REPL, any
      readline), it would become a NUL there too, and the program would
      wait forever.  Tools that drive a terminal from a pipe (``script``,
      ``su --pty``) wait the same way.  Signal characters are never held.
    """

    def __init__(self, master: int, stdin: int | None, tty: int, slave: int) -> None:
        self.master = master
        self.stdin = stdin
        self.tty = tty
        self.out = 1 if os.isatty(1) else 2
        self.stdin_open = stdin is not None
        self.done = False
        self.saved = None
        self.held = b""  # input from an EOF character on, until the command caught up
        self.wrote = 0.0  # when input was last written to the command's pty
        self.heard = 0.0  # when the command's pty last had output
        self.slave = None
        if stdin is None:
            return
        import termios
        import tty as tty_mod

        self.slave = os.dup(slave)  # not inheritable: only ever ours
        cc = termios.tcgetattr(master)[6]
        self.eof = cc_byte(cc[termios.VEOF], b"\x04")
        self.immediate = {cc_byte(cc[i], b"") for i in (termios.VINTR, termios.VQUIT,
                                                          termios.VSUSP)} - {b""}
        try:
            self.saved = termios.tcgetattr(stdin)
        except termios.error:
            return
        if self.saved[3] & termios.ICANON:
            self._take_cooked_input()
        try:
            tty_mod.setraw(stdin, termios.TCSANOW)
        except termios.error:
            self.saved = None

    def _take_cooked_input(self) -> None:
        """Read the complete lines and EOF marks the terminal holds (bounded)."""
        for _ in range(256):
            if not select.select([self.stdin], [], [], 0)[0]:
                return
            try:
                data = os.read(self.stdin, 65536)
            except OSError:
                return
            self.forward(data if data else self.eof)

    def wanted(self) -> list[int]:
        fds = [] if self.done else [self.master]
        if self.stdin_open and not self.done:
            fds.append(self.stdin)
        return fds

    def waiting(self) -> bool:
        """Input is held back: look again soon."""
        return bool(self.held) and not self.done

    def forward(self, data: bytes) -> None:
        if self.held:
            # the command's signal keys go now, whatever waits (they do not
            # depend on what it has read)
            for key in self.immediate:
                if key in data:
                    self._write(key * data.count(key))
                    data = data.replace(key, b"")
        self.held += data
        self.release()

    def release(self) -> None:
        while self.held:
            at = self.held.find(self.eof)
            if at != 0:
                upto = len(self.held) if at < 0 else at
                self._write(self.held[:upto])
                self.held = self.held[upto:]
                continue
            if not self._caught_up():
                return
            self._write(self.eof)
            self.held = self.held[1:]

    def _caught_up(self) -> bool:
        """Has the command read its input, and is it waiting for more?

        Its queue must be empty, and it must have been quiet for a moment:
        a REPL reads a line in raw mode, goes back to cooked mode while it
        runs it (printing the result), and is raw again only when it prints
        its prompt; an EOF character written in that cooked gap would become
        a NUL.  So: no input written and no output seen for QUIET_RAW while
        the pty is raw, or the longer QUIET_COOKED while it is cooked (a
        program may be busy before it switches).  Written bytes also take a
        moment to show in the queue (the kernel moves them in a work item),
        which the same wait covers.
        """
        if select.select([self.slave], [], [], 0)[0]:
            return False  # the command has not read what came before
        import termios

        quiet = time.monotonic() - max(self.wrote, self.heard)
        try:
            cooked = termios.tcgetattr(self.master)[3] & termios.ICANON
        except termios.error:
            return True
        return quiet >= (QUIET_COOKED if cooked else QUIET_RAW)

    def _write(self, data: bytes) -> None:
        write_all(self.master, data)
        self.wrote = time.monotonic()

    def move(self, ready: list[int]) -> None:
        if self.master in ready:
            try:
                data = os.read(self.master, 65536)
            except OSError as exc:  # EIO: every slave end is closed
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                self.done = True
            else:
                self.heard = time.monotonic()
                write_all(self.out, data)
        if self.stdin_open and self.stdin in ready:
            try:
                data = os.read(self.stdin, 65536)
            except OSError as exc:  # EIO: the caller's terminal hung up
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if data:
                self.forward(data)
            else:
                self.stdin_open = False
        if self.held:
            self.release()

    def drain(self) -> None:
        """Copy what the command wrote before it exited."""
        for _ in range(64):
            if self.done or not select.select([self.master], [], [], 0)[0]:
                return
            self.move([self.master])

    def restore(self) -> None:
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None
        if self.saved is not None:
            import termios

            saved, self.saved = self.saved, None
            try:
                # TCSADRAIN: let the output out, keep what was typed meanwhile
                # (it is the shell's next input, not ours to discard)
                termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)
            except termios.error:
                pass


def cc_byte(value, default: bytes) -> bytes:
    """A termios control character as one byte; ``default`` when it is disabled."""
    if isinstance(value, int):
        value = bytes([value])
    return value if value and value != b"\0" else default


def write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1)
            continue
        except OSError:
            return
        data = data[n:]
