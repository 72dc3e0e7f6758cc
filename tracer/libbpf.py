"""A thin, typed ctypes binding over the system libbpf.so.1 (libbpf >= 1.0 API).

Why ctypes and not a wheel: Debian 12 ships libbpf 1.1 (the loader CO-RE needs) and no
maintained Python wheel binds it without bundling its own copy or needing a compiler on the
node; the dozen calls droptrace makes fit in this file. Every handle here is owned by a
context manager and released on every exit path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tracer.errors import LibbpfMissing

BTF_KIND_STRUCT = 4
BTF_KIND_ENUM = 6
BPF_ANY = 0

_SAMPLE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_PRINT_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

_BUDGET_SPENT = -125  # -ECANCELED from a sample callback: stop reading for now
# Ring buffer samples held as bytes at once: draining a full 4 MB ring in one batch took
# ~6 MB of Python objects, at the end of a storm, on top of everything else.
_BATCH = 1024
_log: list[str] = []  # libbpf's messages since the last take_log()
_VERIFIER_LOG_MAX = 1 << 20
_print_cb_ref: object = None  # keeps the C callback alive while libbpf holds it


class BtfType(ctypes.Structure):
    _fields_ = (("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size", ctypes.c_uint32))


class BtfEnum(ctypes.Structure):
    _fields_ = (("name_off", ctypes.c_uint32), ("val", ctypes.c_int32))


def _sig(lib: ctypes.CDLL, name: str, restype: object, *argtypes: object) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


@cache
def lib() -> ctypes.CDLL:
    """The loaded libbpf, with the signatures droptrace uses."""
    name = os.environ.get("DROPTRACE_LIBBPF") or ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lb = ctypes.CDLL(name, use_errno=True)
    except OSError:
        raise LibbpfMissing(
            f"cannot load libbpf ({name}): install libbpf1 (apt-get install libbpf1)"
        ) from None
    vp, cp, i, u32, sz = (
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_size_t,
    )
    _sig(lb, "bpf_object__open_file", vp, cp, vp)
    _sig(lb, "bpf_object__load", i, vp)
    _sig(lb, "bpf_object__close", None, vp)
    _sig(lb, "bpf_object__btf", vp, vp)
    _sig(lb, "bpf_object__find_program_by_name", vp, vp, cp)
    _sig(lb, "bpf_object__find_map_by_name", vp, vp, cp)
    _sig(lb, "bpf_program__set_autoload", i, vp, ctypes.c_bool)
    _sig(lb, "bpf_program__attach", vp, vp)
    _sig(lb, "bpf_link__destroy", i, vp)
    _sig(lb, "bpf_map__fd", i, vp)
    _sig(lb, "bpf_map__pin", i, vp, cp)
    _sig(lb, "bpf_link__pin", i, vp, cp)
    _sig(lb, "bpf_link__disconnect", None, vp)
    _sig(lb, "bpf_obj_get", i, cp)
    u32p = ctypes.POINTER(u32)
    _sig(lb, "bpf_obj_get_info_by_fd", i, i, vp, u32p)
    _sig(lb, "bpf_prog_get_fd_by_id", i, u32)
    _sig(lb, "bpf_prog_query", i, i, i, u32, u32p, u32p, u32p)
    _sig(lb, "bpf_map__set_max_entries", i, vp, u32)
    _sig(lb, "bpf_map_update_elem", i, i, vp, vp, ctypes.c_uint64)
    _sig(lb, "bpf_map_lookup_elem", i, i, vp, vp)
    _sig(lb, "bpf_map_get_next_key", i, i, vp, vp)
    _sig(lb, "ring_buffer__new", vp, i, _SAMPLE_CB, vp, vp)
    _sig(lb, "ring_buffer__poll", i, vp, i)
    _sig(lb, "ring_buffer__consume", i, vp)
    _sig(lb, "ring_buffer__free", None, vp)
    _sig(lb, "libbpf_num_possible_cpus", i)
    _sig(lb, "btf__load_vmlinux_btf", vp)
    _sig(lb, "btf__free", None, vp)
    _sig(lb, "btf__find_by_name_kind", ctypes.c_int32, vp, cp, u32)
    _sig(lb, "btf__resolve_size", ctypes.c_long, vp, u32)
    _sig(lb, "btf__type_by_id", ctypes.POINTER(BtfType), vp, u32)
    _sig(lb, "btf__name_by_offset", cp, vp, u32)
    _sig(lb, "libbpf_set_print", vp, _PRINT_CB)
    _capture_log(lb)
    del sz
    return lb


def _capture_log(lb: ctypes.CDLL) -> None:
    """Route libbpf's messages into a buffer instead of stderr (shown with --verbose).

    The callback receives a va_list; on x86-64 it is passed as a pointer that vsnprintf
    accepts as is. Elsewhere libbpf is just silenced.
    """
    global _print_cb_ref
    if platform.machine() != "x86_64":
        _print_cb_ref = _PRINT_CB()
        lb.libbpf_set_print(_print_cb_ref)
        return
    libc = ctypes.CDLL(None)
    vsnprintf = libc.vsnprintf
    vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]

    def on_print(level: int, fmt: bytes, ap: int) -> int:
        try:
            # A verifier log comes whole in one message, its reason at the end: room for it.
            size = _VERIFIER_LOG_MAX if b"PROG LOAD LOG" in fmt else 1024
            buf = ctypes.create_string_buffer(size)
            vsnprintf(buf, len(buf), fmt, ap)
            _log.append(buf.value.decode(errors="replace").rstrip())
            del _log[:-200]
        except BaseException as exc:  # Ctrl-C can land here: raised once libbpf returns
            _deferred.append(exc)
        return 0

    _print_cb_ref = _PRINT_CB(on_print)
    lb.libbpf_set_print(_print_cb_ref)


# Exceptions raised inside a ctypes callback (a Ctrl-C while libbpf logs or hands over a
# sample) cannot cross back into C: ctypes would print "Exception ignored" with a traceback
# and drop them. They wait here and are raised when the C call returns.
_deferred: list[BaseException] = []


def _reraise() -> None:
    if _deferred:
        exc = _deferred[0]
        _deferred.clear()
        raise exc


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM that come during a C call which calls back into Python (libbpf's
    log, ring samples) are handled when it returns. Their handler raises, and raised at a
    callback's first line, before any `try` there, ctypes printed "Exception ignored" with a
    traceback and the interrupt was lost. Only the main thread has signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, lambda s, _frame: held.append(s))
    try:
        yield
    finally:
        for num, handler in saved.items():
            signal.signal(num, handler)
    for num in held[:1]:
        saved[num](num, None)  # as it would have run: raises KeyboardInterrupt


def take_log() -> list[str]:
    """libbpf's messages since the last call (verifier and attach errors)."""
    out = _log[:]
    _log.clear()
    return out


def describe(err: OSError) -> str:
    """A refusal in words: the error, the verifier's reason if a program was refused (the
    last line of its log, e.g. "unknown func bpf_jiffies64#118"), and libbpf's last log line
    that says why."""
    log = [line for line in take_log() if line]
    detail = next(
        (line for line in reversed(log) if "error" in line.lower() or "failed" in line), ""
    )
    verifier = next((_verifier_reason(line) for line in reversed(log) if "END PROG" in line), "")
    why = "; ".join(x.strip() for x in (verifier, detail) if x)
    return f"{err.strerror or err}" + (f" ({why})" if why else "")


def _verifier_reason(message: str) -> str:
    """The verifier's last line in a libbpf "PROG LOAD LOG" message (its reason)."""
    lines = [ln for ln in message.split("-- END PROG LOAD LOG --")[0].splitlines() if ln.strip()]
    reason = lines[-1].strip() if lines else ""
    if reason.startswith("processed ") and len(lines) > 1:  # the statistics line comes last
        reason = lines[-2].strip()
    return f"verifier: {reason}" if reason and "BEGIN PROG LOAD LOG" not in reason else ""


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def num_possible_cpus() -> int:
    return int(lib().libbpf_num_possible_cpus())


class Map:
    """A map of a loaded object, addressed by its fd; keys and values are ctypes objects."""

    def __init__(self, handle: int, name: str) -> None:
        self.name = name
        self._handle = handle
        self.fd = int(lib().bpf_map__fd(handle))

    def pin(self, path: Path) -> None:
        if lib().bpf_map__pin(self._handle, str(path).encode()):
            raise _errno_error(f"pin of map {self.name} at {path}")

    def update(self, key: ctypes._CData, value: ctypes._CData) -> None:
        if lib().bpf_map_update_elem(self.fd, ctypes.byref(key), ctypes.byref(value), BPF_ANY):
            raise _errno_error(f"update of map {self.name}")

    def lookup(self, key: ctypes._CData, value: ctypes._CData) -> bool:
        return bool(lib().bpf_map_lookup_elem(self.fd, ctypes.byref(key), ctypes.byref(value)) == 0)

    def keys(self, key_type: type[ctypes._CData]) -> Iterator[ctypes._CData]:
        prev: ctypes._CData | None = None
        while True:
            nxt = key_type()
            prev_ref = ctypes.byref(prev) if prev is not None else None
            if lib().bpf_map_get_next_key(self.fd, prev_ref, ctypes.byref(nxt)):
                return
            yield nxt
            prev = nxt


def percpu_sum(m: Map, key: ctypes._CData) -> int:
    """Sum of a per-CPU map's u64 value over all possible CPUs (0 if the key is absent)."""
    values = (ctypes.c_uint64 * num_possible_cpus())()
    return sum(values) if m.lookup(key, values) else 0


class _MapInfo(ctypes.Structure):
    """The start of the kernel's struct bpf_map_info (uapi/linux/bpf.h); it fills what fits."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    )


def value_size(m: Map) -> int:
    """The size of one value of map `m` as the kernel has it (per CPU for per-CPU maps)."""
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if lib().bpf_obj_get_info_by_fd(m.fd, ctypes.byref(info), ctypes.byref(size)):
        raise _errno_error(f"info of map {m.name}")
    return int(info.value_size)


class PinnedMap(AbstractContextManager["PinnedMap"]):
    """A map pinned in bpffs by an earlier process, opened by path; closes its fd on exit."""

    def __init__(self, path: Path) -> None:
        fd = lib().bpf_obj_get(str(path).encode())
        if fd < 0:
            raise _errno_error(f"open of pinned map {path}")
        self.map = Map.__new__(Map)
        self.map.name, self.map.fd = path.name, int(fd)

    def __exit__(self, *exc: object) -> None:
        os.close(self.map.fd)


class Link(AbstractContextManager["Link"]):
    def __init__(self, handle: int) -> None:
        self._handle: int | None = handle

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def pin(self, path: Path) -> None:
        """Keep the program attached after this process exits, until `path` is removed."""
        if lib().bpf_link__pin(self._handle, str(path).encode()):
            raise _errno_error(f"pin of link at {path}")
        lib().bpf_link__disconnect(self._handle)

    def destroy(self) -> None:
        if self._handle:
            lib().bpf_link__destroy(self._handle)
            self._handle = None


class BpfObject(AbstractContextManager["BpfObject"]):
    """An opened (then loaded) BPF object file; closing it unloads programs and maps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with _signals_held():
            handle = lib().bpf_object__open_file(str(path).encode(), None)
        _reraise()
        if not handle:
            raise _errno_error(f"open {path}")
        self._handle: int | None = handle

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._handle:
            lib().bpf_object__close(self._handle)
            self._handle = None

    @property
    def handle(self) -> int:
        if not self._handle:
            raise RuntimeError("BPF object already closed")
        return self._handle

    def _program(self, name: str) -> int:
        prog = lib().bpf_object__find_program_by_name(self.handle, name.encode())
        if not prog:
            raise KeyError(f"no program {name} in {self.path}")
        return int(prog)

    def _map(self, name: str) -> int:
        m = lib().bpf_object__find_map_by_name(self.handle, name.encode())
        if not m:
            raise KeyError(f"no map {name} in {self.path}")
        return int(m)

    def set_autoload(self, program: str, on: bool) -> None:
        lib().bpf_program__set_autoload(self._program(program), on)

    def set_max_entries(self, map_name: str, n: int) -> None:
        if lib().bpf_map__set_max_entries(self._map(map_name), n):
            raise _errno_error(f"resize of map {map_name}")

    def load(self) -> None:
        with _signals_held():
            failed = lib().bpf_object__load(self.handle)
        _reraise()
        if failed:
            raise _errno_error(f"load of {self.path.name}")

    def attach(self, program: str) -> Link:
        with _signals_held():
            link = lib().bpf_program__attach(self._program(program))
        _reraise()
        if not link:
            raise _errno_error(f"attach of {program}")
        return Link(link)

    def map(self, name: str) -> Map:
        return Map(self._map(name), name)

    def btf_struct_size(self, name: str) -> int | None:
        btf = lib().bpf_object__btf(self.handle)
        if not btf:
            return None
        type_id = lib().btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT)
        return None if type_id < 0 else int(lib().btf__resolve_size(btf, type_id))


class RingBuffer(AbstractContextManager["RingBuffer"]):
    """Polls a BPF ring buffer; each sample is copied out as bytes and handed to `on_sample`.

    The C callback only copies bytes: exceptions cannot cross ctypes callbacks, so the
    caller's handler runs after poll() returns, in plain Python.
    """

    def __init__(self, m: Map) -> None:
        self._pending: list[bytes] = []
        self._limit = 0

        def on_sample(_ctx: int, data: int, size: int) -> int:
            try:
                self._pending.append(ctypes.string_at(data, size))
            except BaseException as exc:  # see _deferred
                _deferred.append(exc)
                return _BUDGET_SPENT
            # A negative return makes libbpf stop after this sample (it stays consumed).
            return _BUDGET_SPENT if len(self._pending) >= self._limit else 0

        self._cb = _SAMPLE_CB(on_sample)
        handle = lib().ring_buffer__new(m.fd, self._cb, None, None)
        if not handle:
            raise _errno_error("ring buffer")
        self._handle: int | None = handle

    def __exit__(self, *exc: object) -> None:
        if self._handle:
            lib().ring_buffer__free(self._handle)
            self._handle = None

    def poll(
        self, timeout_ms: int, on_sample: Callable[[bytes], None], limit: int = 1 << 30
    ) -> int:
        """Wait up to timeout_ms for samples and hand at most `limit` to on_sample; returns
        how many. What is not read stays in the ring (whose overflow the kernel counts).
        Samples are copied out `_BATCH` at a time: a full ring read at once was held whole."""
        done = 0
        self._limit = min(limit, _BATCH)
        with _signals_held():
            rc = lib().ring_buffer__poll(self._handle, timeout_ms)
        _reraise()
        while True:
            # Producers submit without waking the reader (BPF_RB_NO_WAKEUP), so epoll mostly
            # just times out: read whatever is there either way.
            if 0 <= rc < self._limit and len(self._pending) < self._limit:
                with _signals_held():
                    rc = lib().ring_buffer__consume(self._handle)
                _reraise()
            if rc < 0 and -rc not in (4, -_BUDGET_SPENT):  # EINTR: Ctrl-C, handled by the caller
                raise OSError(-rc, f"ring buffer poll: {os.strerror(-rc)}")
            pending, self._pending = self._pending, []
            for raw in pending:
                on_sample(raw)
            done += len(pending)
            if len(pending) < self._limit or done >= limit:
                return done
            self._limit, rc = min(limit - done, _BATCH), 0


class VmlinuxBtf(AbstractContextManager["VmlinuxBtf"]):
    """The running kernel's BTF (/sys/kernel/btf/vmlinux), for names the kernel defines."""

    def __init__(self) -> None:
        with _signals_held():
            handle = lib().btf__load_vmlinux_btf()
        _reraise()
        if not handle:
            raise _errno_error("load of kernel BTF")
        self._handle: int | None = handle

    def __exit__(self, *exc: object) -> None:
        if self._handle:
            lib().btf__free(self._handle)
            self._handle = None

    def enum(self, name: str) -> dict[int, str] | None:
        """Values of `enum name` as {value: enumerator}, or None if the kernel lacks it."""
        type_id = lib().btf__find_by_name_kind(self._handle, name.encode(), BTF_KIND_ENUM)
        if type_id < 0:
            return None
        t = lib().btf__type_by_id(self._handle, type_id)
        vlen = t.contents.info & 0xFFFF
        members = ctypes.cast(
            ctypes.addressof(t.contents) + ctypes.sizeof(BtfType), ctypes.POINTER(BtfEnum)
        )
        out: dict[int, str] = {}
        for k in range(vlen):
            raw = lib().btf__name_by_offset(self._handle, members[k].name_off)
            out[members[k].val] = raw.decode() if raw else f"#{members[k].val}"
        return out
