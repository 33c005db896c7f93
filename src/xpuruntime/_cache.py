"""On-disk caches shared by every engine: private folders named by hashes, checked entries, one builder.

Every cache xpuruntime writes (float16 and int8 model copies, compiled-model folders handed to an
engine, tuning records) goes through here, so they all keep the same promises:

- **Private**: every folder level xpuruntime creates (``cache_dir`` itself when missing, its parents, and
  ``onnxruntime/``, ``openvino/``...) is created ``0o700``, and entries are ``0o600``. A folder xpuruntime
  created carries a marker file (``.xpuruntime-cache``); only such a folder is tightened back to ``0o700``
  when someone opened it. A folder the user made (say ``cache_dir`` pointed at a shared folder that already
  holds ``onnxruntime/``) keeps its mode. A folder of ours that is a symlink, not a folder, or owned by
  someone else is refused (the session runs uncached).
- **Named by hashes only**: names are checked against ``[A-Za-z0-9_.-]``, so nothing from a model or a
  policy becomes a path component; only the user's ``cache_dir`` itself is taken as given.
- **Atomic**: an entry is written to a temporary file and renamed; a checksum sidecar
  (``NAME.sha256``: SHA-256 and size) is written after it.
- **Checked**: an entry whose bytes do not match its sidecar (truncated, garbage, no sidecar) is
  never used: a warning, then the caller rebuilds it. Entries are opened with ``O_NOFOLLOW``, so a
  symlink planted in place of one is neither read nor written through (the rename replaces the link).
- **One builder**: :func:`entry_lock` takes an exclusive ``fcntl.flock`` on ``NAME.lock``; a second
  process building the same entry waits, then reads what the first one wrote.

A cache that cannot be used (read-only disk, full disk, a refused folder) is a warning, never an error:
the caller builds in memory and runs.

>>> folder = private_folder("~/.cache/xpuruntime", "onnxruntime")   # doctest: +SKIP
>>> with entry_lock(folder, "abc123-fp16.onnx"):                      # doctest: +SKIP
...     data = read_entry(folder, "abc123-fp16.onnx") or build_and_write()
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from xpuruntime._io import atomic_write_bytes

__all__ = ["CacheUnavailable", "refuse_path_options", "private_folder", "entry_lock", "read_entry", "write_entry", "verify_folder",
           "record_folder", "MAX_ENTRY_BYTES", "MARKER"]

#: words of an engine option's name that make it name a file or folder (or make the engine write one)
_PATH_WORDS = frozenset({"dir", "path", "file", "filepath", "filename", "folder", "cache", "config", "context",
                         "dump"})
_LIBRARY_OPTIONS = frozenset({"backend_path", "trt_extra_plugin_lib_paths"})  # libraries to load, not caches


def refuse_path_options(options: object, field: str) -> None:
    """Refuse engine options that name a path or turn on an engine's own file cache (``CACHE_DIR``,
    ``trt_engine_cache_path``, ``ep.context_file_path``, ``load_config`` ...): such a path would skip the cache
    rules (private folders, checksums), so the only way to a cache is the policy's ``cache_dir``.

    >>> refuse_path_options({"CACHE_DIR": "/tmp/c"}, "engine_options.config")
    Traceback (most recent call last):
    xpuruntime.errors.PolicyError: engine_options.config.CACHE_DIR names a path or an engine cache ...
    """
    from xpuruntime.errors import PolicyError, short_repr

    if not isinstance(options, dict) and not hasattr(options, "items"):
        return  # the engine's own check says what the option should be
    for key in options:
        words = set(re.split(r"[^a-z0-9]+", str(key).lower()))
        if words & _PATH_WORDS and str(key).lower() not in _LIBRARY_OPTIONS:
            raise PolicyError(f"{field}.{key} names a path or an engine cache, which would bypass xpuruntime's cache "
                              "rules", field=f"{field}.{key}", expected="no path options",
                              received=short_repr(key), hint="set the policy's execution.cache_dir: xpuruntime "
                              "gives the engine a private, checksummed folder under it")


MAX_ENTRY_BYTES = 1 << 34  # 16 GiB: anything bigger is not an entry we wrote
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_SIDECAR, _LOCK = ".sha256", ".lock"
MARKER = ".xpuruntime-cache"  #: in every cache folder xpuruntime created (hidden: engines and listings skip it)
_LOCK_WAIT_S = 600.0  # a builder stuck this long is presumed dead; build without the lock


class CacheUnavailable(OSError):
    """A cache folder or entry cannot be used safely; callers warn and run uncached."""


def _check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"cache names are derived from hashes only, got {name!r}")
    return name


def private_folder(root: str | os.PathLike[str], *names: str) -> Path:
    """``root/names...``, created ``0o700``; each folder of ours must be a real folder we own.

    ``root`` (the user's ``cache_dir``) may be a symlink and may be shared; it is created private
    when missing. Raises :class:`CacheUnavailable` when the folder cannot be used safely.
    """
    folder = Path(os.path.expanduser(os.fspath(root)))
    try:
        if not folder.exists():
            _make_private_dirs(folder)
        if not folder.is_dir():
            raise CacheUnavailable(f"cache_dir {folder} is not a folder")
        for name in names:
            folder = _own_folder(folder / _check_name(name))
    except CacheUnavailable:
        raise
    except OSError as exc:
        raise CacheUnavailable(f"cannot create the cache folder {folder}: {exc.strerror or exc}") from None
    return folder


def _make_private_dirs(folder: Path) -> None:
    """``mkdir -p`` with every level it creates ``0o700`` (``os.makedirs`` gives parents the umask's mode)."""
    missing = []
    for level in (folder, *folder.parents):
        if os.path.lexists(level):
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            os.mkdir(level, 0o700)
        except FileExistsError:  # another process made it meanwhile
            continue
        os.chmod(level, 0o700)  # mkdir's mode is masked by the umask


def _own_folder(path: Path) -> Path:
    created = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
        created = True
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise CacheUnavailable(f"the cache folder {path} is a symlink or not a folder; it is not used")
    if st.st_uid != os.getuid():
        raise CacheUnavailable(f"the cache folder {path} belongs to another user (uid {st.st_uid}); it is not used")
    if created:
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask, which could also take the owner's bits
        _mark_ours(path)
    elif st.st_mode & 0o077 and _is_ours(path):
        os.chmod(path, 0o700)  # ours, opened since: private again; a folder the user made keeps its mode
    return path


def _mark_ours(path: Path) -> None:
    with contextlib.suppress(OSError):  # without the marker the folder is only never re-tightened
        os.close(os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))


def _is_ours(path: Path) -> bool:
    try:
        st = os.lstat(path / MARKER)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid()


@contextlib.contextmanager
def entry_lock(folder: Path, name: str) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder/name`` across processes (``fcntl.flock`` on ``name.lock``).

    Yields True when the lock is held; False when it could not be taken (no ``fcntl``, an unusable
    lock file, or a holder stuck for ten minutes), in which case the caller proceeds unlocked: writes
    stay atomic, so the worst outcome is building twice.
    """
    fd = _open_lock(folder / (_check_name(name) + _LOCK))
    try:
        yield fd is not None and _flock(fd)
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def _open_lock(path: Path) -> int | None:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(2):
        try:
            return os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                return None
            os.unlink(path)  # a symlink planted as the lock file: replace it with a real one
    return None


def _flock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX
        return False
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        except OSError:
            return False


def _open_regular(path: Path) -> int:
    """A file descriptor on a regular file, never through a symlink (``O_NOFOLLOW``: ELOOP instead)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a regular file")
    return fd


def _read_file(path: Path, limit: int) -> bytes:
    with os.fdopen(_open_regular(path), "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def _digest_file(path: Path) -> str:
    """The sidecar line of a file, hashed in chunks (compiled blobs can be gigabytes)."""
    digest, size = hashlib.sha256(), 0
    with os.fdopen(_open_regular(path), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return f"{digest.hexdigest()} {size}\n"


def _sidecar_text(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()} {len(data)}\n"


def _recorded(folder: Path, name: str) -> str:
    try:
        return _read_file(folder / (name + _SIDECAR), 256).decode("ascii")
    except (OSError, ValueError, UnicodeDecodeError):
        return ""


def _problem(exc: BaseException) -> str:
    return "is a symlink (not followed)" if getattr(exc, "errno", None) == errno.ELOOP else f"is unreadable ({exc})"


def read_entry(folder: Path, name: str, *, warn_stacklevel: int = 2) -> bytes | None:
    """The entry's bytes when present and intact; None on a miss or (with a warning) a bad entry."""
    path = folder / _check_name(name)
    try:
        data = _read_file(path, MAX_ENTRY_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _warn(f"cache entry {path} {_problem(exc)}; rebuilding it", warn_stacklevel)
        return None
    if _recorded(folder, name) != _sidecar_text(data):
        _warn(f"cache entry {path} is corrupt (its checksum does not match: truncated or overwritten); "
              "rebuilding it", warn_stacklevel)
        return None
    return data


def write_entry(folder: Path, name: str, data: bytes, *, warn_stacklevel: int = 2) -> bool:
    """Write the entry and its checksum atomically (``0o600``); a failure is a warning and False."""
    path = folder / _check_name(name)
    try:
        atomic_write_bytes(path, data, mode=0o600, replace_special=True)
        atomic_write_bytes(path.with_name(name + _SIDECAR), _sidecar_text(data).encode("ascii"), mode=0o600,
                           replace_special=True)
    except OSError as exc:
        _warn(f"cannot write the cache entry {path} ({exc.strerror or exc}); running without it", warn_stacklevel)
        return False
    return True


def _engine_files(folder: Path) -> list[str]:
    return [n for n in sorted(os.listdir(folder)) if not n.endswith((_SIDECAR, _LOCK)) and not n.startswith(".")]


def _intact(folder: Path, name: str) -> bool:
    try:
        return _NAME.match(name) is not None and _digest_file(folder / name) == _recorded(folder, name)
    except (OSError, ValueError):
        return False


def verify_folder(folder: Path, *, warn_stacklevel: int = 2) -> list[str]:
    """For a folder an engine fills itself (OpenVINO's CACHE_DIR): remove every file that is not recorded
    with a matching checksum (truncated, overwritten, or left by a build that died) and return their names,
    so the engine rebuilds them instead of loading them. Run it under :func:`entry_lock`."""
    removed = [name for name in _engine_files(folder) if not _intact(folder, name)]
    for name in removed:
        _remove(folder / name, folder / (name + _SIDECAR))
    if removed:
        _warn(f"cache folder {folder}: {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} failed the checksum "
              f"or had none ({', '.join(removed[:3])}); removed, the engine rebuilds them", warn_stacklevel)
    return removed


def record_folder(folder: Path, *, warn_stacklevel: int = 2) -> list[str]:
    """Write checksum sidecars for the files an engine has just written into ``folder``; return their names."""
    recorded = []
    for name in _engine_files(folder):
        path = folder / name
        if not _NAME.match(name) or (folder / (name + _SIDECAR)).exists():
            continue
        try:
            line = _digest_file(path)
            atomic_write_bytes(folder / (name + _SIDECAR), line.encode("ascii"), mode=0o600, replace_special=True)
            os.chmod(path, 0o600)
            recorded.append(name)
        except (OSError, ValueError) as exc:
            _warn(f"cannot record the checksum of cache entry {path} ({_problem(exc)}); it is rebuilt next time",
                  warn_stacklevel)
    return recorded


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _warn(message: str, stacklevel: int) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


def cache_key(*parts: str) -> str:
    """Folder name for a cache entry: a hash of what the entry depends on (never a user path).

    >>> len(cache_key("model-hash", "policy-hash", "fingerprint-hash"))
    24
    """
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
