"""Small file helpers shared by policies, caches and reports: atomic writes, bounded reads, safe targets.

Every file xpuruntime writes at a path a user named goes through :func:`atomic_write_bytes`, which keeps
these promises:

- **Regular files only**: a target that exists and is not a regular file (a symlink, a FIFO, a character
  or block device such as ``/dev/null``, a socket, a folder) is refused with :class:`UnsafePathError`; it is
  neither written through nor replaced. ``-`` is not a file name here: callers that offer stdout use
  :func:`write_output`.
- **Modes kept**: an existing file keeps its permission bits (and, where allowed, its owner); a new one is
  created ``0o666`` minus the process umask, like any other tool's output. An explicit ``mode`` (cache
  entries: ``0o600``) is applied exactly.
- **Atomic**: the data goes to a temporary file in the same folder, is flushed and renamed over the
  target, so a reader never sees half a file and a crash leaves the old one intact.

>>> atomic_write_text("policy.yaml", "execution: {precision: bf16}\\n")   # doctest: +SKIP
>>> write_output("-", "{}\\n")                                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from pathlib import Path

from xpuruntime.errors import XpuRuntimeError

__all__ = ["atomic_write_bytes", "atomic_write_text", "read_bounded", "check_write_target", "check_regular_file",
           "write_output", "is_stdout", "describe_node", "UnsafePathError", "STDOUT"]

STDOUT = "-"  #: the path that means "standard output" to :func:`write_output`
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class UnsafePathError(XpuRuntimeError, OSError):
    """A path names something xpuruntime will not write or read: not a regular file, or a symlink.

    Also an ``OSError``, so code that treats an unwritable path as an I/O failure keeps doing so.
    """


def describe_node(st: os.stat_result) -> str:
    """What kind of file system node ``st`` (from ``os.lstat``) is, in words."""
    kinds = ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((word for test, word in kinds if test(st.st_mode)), "a regular file")


def check_write_target(path: str | os.PathLike[str]) -> os.stat_result | None:
    """Refuse a target that exists and is not a regular file; its ``lstat`` when it is one, None when absent.

    >>> check_write_target("/dev/null")                     # doctest: +SKIP
    UnsafePathError: refusing to write /dev/null: it is a character device, not a regular file
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = describe_node(st)
        raise UnsafePathError(f"refusing to write {os.fspath(path)}: it is {kind}, not a regular file",
                              expected="a new file or an existing regular file", received=kind,
                              hint="name a regular file (for standard output, pass '-' where the command offers "
                                   "it)" if not stat.S_ISLNK(st.st_mode) else
                                   "name the file the link points to, not the link")
    return st


def check_regular_file(path: str | os.PathLike[str]) -> os.stat_result:
    """``stat`` of an existing regular file (symlinks to one are followed); :class:`UnsafePathError` for a FIFO,
    device, socket or folder (reading a FIFO would block), ``FileNotFoundError`` when absent.

    >>> check_regular_file("x.npy").st_size                 # doctest: +SKIP
    128
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = describe_node(st)
        raise UnsafePathError(f"refusing to read {os.fspath(path)}: it is {kind}, not a regular file",
                              expected="a regular file", received=kind, hint="save the data to a file and name it")
    return st


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                       replace_special: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A reader never sees a half-written file, and a crash leaves the old file intact. A target that is not a
    regular file raises :class:`UnsafePathError` (``replace_special=True``, for xpuruntime's own cache folders
    only, replaces it instead). ``mode=None`` keeps an existing file's mode, else honours the umask.

    >>> atomic_write_bytes("out.bin", b"\\x00\\x01")         # doctest: +SKIP
    PosixPath('out.bin')
    """
    path = Path(path)
    old = None if replace_special else check_write_target(path)
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            _set_mode(fh.fileno(), mode, old)
            os.fsync(fh.fileno())
        if not replace_special:
            check_write_target(path)  # narrows the window in which a node could appear (not a lock)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _temp_file(path: Path) -> tuple[int, str]:
    """A new file beside ``path``, created ``0o666`` minus the umask (never through a symlink)."""
    stem = path.name[:180]  # the temporary name must fit NAME_MAX however long the target's is
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{stem}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _TMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def _set_mode(fd: int, mode: int | None, old: os.stat_result | None) -> None:
    if mode is not None:
        os.fchmod(fd, mode)
        return
    if old is None:
        return  # created 0o666 & ~umask by the kernel
    os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)  # setuid/setgid/sticky bits are not carried over
    if hasattr(os, "fchown") and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(OSError):  # only root (or a group member) may; otherwise the writer owns it
            os.fchown(fd, old.st_uid, old.st_gid)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def is_stdout(path: str | os.PathLike[str] | None) -> bool:
    """Whether a user-given output path means standard output (``-``)."""
    return path is not None and os.fspath(path) == STDOUT


def write_output(path: str | os.PathLike[str], text: str) -> Path | None:
    """Write ``text`` to the file ``path`` atomically, or to standard output when ``path`` is ``-``.

    A target that is not a regular file raises :class:`UnsafePathError` (before anything is written).

    >>> write_output("-", "hello\\n")                        # doctest: +SKIP
    hello
    """
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    return atomic_write_text(path, text)


def read_bounded(path: Path, limit: int) -> bytes:
    """Read a regular file of at most ``limit`` bytes; raise ValueError/OSError otherwise.

    The file is opened first and then checked, so a FIFO or device never blocks the read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data
