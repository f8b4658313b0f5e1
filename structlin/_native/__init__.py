"""Native CPU kernels (``kernels.c``), compiled on first use and loaded with ctypes.

The library is built lazily -- on the first call of any function here, never
at ``import structlin`` -- with the system C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) and cached under ``$STRUCTLIN_CACHE_DIR``, else
``$XDG_CACHE_HOME/structlin``, else ``~/.cache/structlin``, in a folder named
by a hash of the source, the compiler, the flags and the CPU.

The library is built with ``-fopenmp`` when possible, so that its threads are
torch's own (libgomp) pool; otherwise with plain pthreads
(``STRUCTLIN_NATIVE_OPENMP=0`` forces the latter).

``STRUCTLIN_NATIVE`` set to 0, false, off, no, disable or disabled (any case)
disables the native path; 1, true, on, yes, enable or enabled asks for it, so
that a failure warns; another value warns and counts as unset.  Any failure (no
compiler, compile or load error) disables the path as well; :func:`native_status`
says why.  Nothing here raises at import time.

Cache safety:

* A library is written to a temporary name, synced and renamed into place; then
  its SHA-256 goes to ``<library>.sha256`` the same way.  A library is loaded
  only after its bytes match that digest; one that does not (truncated, zeroed,
  or with no digest) is rebuilt, and never loaded.
* Builds of a folder take ``<folder>/.lock`` (flock; the holder's pid is written
  in it).  A process waits for it at most ``STRUCTLIN_NATIVE_LOCK_TIMEOUT``
  seconds (default 120), then runs the pure-PyTorch path with one warning.
* A failed build leaves ``<library>.failed`` (JSON: the compiler file's path,
  size and mtime, and the failing command, its exit status and output), so later
  processes skip it; it is retried once the compiler file changes, or after the
  marker is deleted.

Tensor wrappers (CPU, contiguous, all float32 or all float64; ``rows`` = size
of dim 0, ``n`` = signal length, ``m = n // 2 + 1``; complex tensors are passed
as ``torch.view_as_real`` views of shape ``(rows, m, 2)``):

    dct_reorder(x, out)      out = [x0, x2, x4, ..., x5, x3, x1] per row
    dct_unreorder(v, out)    inverse permutation
    dct_post(z, a, b, out)   DCT-II post-twiddle of z = rfft(reorder(x))
    idct_pre(X, a, b, z)     DCT-III pre-twiddle; x = unreorder(irfft(z, n))
    fwht_(x, scale)          in-place Walsh-Hadamard transform times scale
    gather(src, idx, out)    out[:, j] = src[:, idx[j]], or 0 where idx[j] < 0
    bin_map(z, m00, m01, m11, out)   ACDC per-bin 2x2 map (in place allowed)
    ff_gather_scale(src, idx, D, out, ld, jstride, nlim)   Fastfood gather times a diagonal, per block
    ff_scale_sum(src, D, bias, out, nsum, d, ld, nlim)     diagonal scaling (+ bias), summed over blocks
    ff_colsum(a, b, idx, acc, ld, jstride, nlim)           per-column sums over rows of a * (gathered) b
    bin_grad_map_(g, u, m00, m01, m11, acc)   ACDC coefficient gradients summed over rows into acc (m, 3),
                                              then bin_map applied to g in place
    colsum_scale_(g, x, a, acc, relu_mask)    acc = sum over rows of g * x, then g *= a in place (and 0 where x <= 0)
    acdc_forward(...), acdc_backward(...)     a whole ACDC cascade (power-of-two n), forward or backward, in one
                                              parallel region over chunks of rows (see acdc_forward)
    fft_real(src, dst, tw, br, inverse)       rfft / irfft of rows by the cascade's own FFT (for tests)
    pair_map(z, p, q, out, outer, n, inner)   the n-D DCT's pair map along one dimension of a complex array
    dct_dim(src, dst, plan, outer, inner)     DCT-II / DCT-III along dimension 1 of (outer, n, inner), power-of-two
                                              n, in one pass per chunk by the cascade's FFT (dst may be src);
                                              plan = dct_plan(ab, tw, br, pos, inverse), the tables checked once
    dct_reorder_rows(x, idx, out, inverse)    reorder (or its inverse) along the last dimension of (outer, R, n),
                                              reading row idx[r] into row r

Twiddles (theta_k = pi * k / (2 n), k = 0 .. n // 2):
    dct_post:  a = 2 cos(theta), b = 2 sin(theta)   -> scipy.fft.dct(x, 2)
    idct_pre:  a = cos(theta) / 2, b = sin(theta) / 2 -> scipy.fft.idct(X, 2)
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from typing import Iterator, NamedTuple

import torch

__all__ = [
    "available",
    "native_status",
    "dct_reorder",
    "dct_unreorder",
    "dct_post",
    "idct_pre",
    "fwht_",
    "gather",
    "bin_map",
    "ff_gather_scale",
    "ff_scale_sum",
    "ff_colsum",
    "bin_grad_map_",
    "colsum_scale_",
    "acdc_forward",
    "acdc_backward",
    "fft_real",
    "pair_map",
    "dct_plan",
    "dct_dim",
    "dct_reorder_rows",
    "lanes",
]

_ABI_VERSION = 8
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.c")
_BASE_FLAGS = ["-O3", "-std=gnu99", "-fPIC", "-shared", "-pthread"]
_NATIVE_FLAGS = ["-march=native"]

_OFF = ("0", "false", "off", "no", "disable", "disabled")
_ON = ("1", "true", "on", "yes", "enable", "enabled")
_LOCK_TIMEOUT_S = 120.0  # default wait for another process's build (STRUCTLIN_NATIVE_LOCK_TIMEOUT)
_LOCK_POLL_S = 0.1

_lock = threading.Lock()
_tried = False
_status = "not loaded yet"
_fns: dict | None = None  # dtype -> the kernels, in the order of _bind's signatures
_vector_bytes = 0  # the library's vector width in bytes


class BuildLockTimeout(RuntimeError):
    """Another process held the build lock for longer than the allowed wait."""


# --------------------------------------------------------------------------
# Settings


def _warn(message: str, stacklevel: int = 4) -> None:
    """Warn once from the first load; the default ``stacklevel`` names the caller of :func:`available`."""
    warnings.warn(f"structlin native kernels: {message}", RuntimeWarning, stacklevel=stacklevel)


def _requested() -> tuple[bool | None, str]:
    """``STRUCTLIN_NATIVE`` as (False: off, True: on, None: unset, i.e. use them if they build), and its text.

    Spellings are matched ignoring case and surrounding spaces; an unknown one warns and counts as unset."""
    raw = os.environ.get("STRUCTLIN_NATIVE", "").strip()
    word = raw.lower()
    if word in _OFF:
        return False, raw
    if word in _ON:
        return True, raw
    if word:
        _warn(f"STRUCTLIN_NATIVE={raw!r} is not understood; it is ignored. Accepted: "
              f"{'/'.join(_OFF)} (off), {'/'.join(_ON)} (on, and warn when they cannot be built)", stacklevel=5)
    return None, raw


def _lock_timeout() -> float:
    """Seconds to wait for another process's build lock (``STRUCTLIN_NATIVE_LOCK_TIMEOUT``, default 120)."""
    raw = os.environ.get("STRUCTLIN_NATIVE_LOCK_TIMEOUT", "").strip()
    if not raw:
        return _LOCK_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also catches nan
        _warn(f"STRUCTLIN_NATIVE_LOCK_TIMEOUT={raw!r} is not a number of seconds >= 0; "
              f"waiting {_LOCK_TIMEOUT_S:g} s")
        return _LOCK_TIMEOUT_S
    return seconds


# --------------------------------------------------------------------------
# Build and load


def _cache_root() -> str:
    d = os.environ.get("STRUCTLIN_CACHE_DIR")
    if d:
        return d
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "structlin")
    return os.path.join(os.path.expanduser("~"), ".cache", "structlin")


def _find_compiler() -> list[str] | None:
    cc = os.environ.get("CC")
    if cc:
        cmd = shlex.split(cc)
        if cmd and shutil.which(cmd[0]):
            return cmd
        return None
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    return ""


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)


def _build_dir(cc: list[str]) -> str:
    """The cache folder of this source, compiler (path, command and ``--version``), flags and CPU."""
    ver = _run(cc + ["--version"]).stdout
    with open(_SRC, "rb") as f:
        src = f.read()
    h = hashlib.sha256()
    for part in (src, shutil.which(cc[0]).encode(), " ".join(cc).encode(), ver,
                 " ".join(_BASE_FLAGS + _NATIVE_FLAGS).encode(), platform.machine().encode(),
                 _cpu_flags().encode()):
        h.update(part)
        h.update(b"\0")
    return os.path.join(_cache_root(), h.hexdigest()[:20])


def _compiler_stamp(cc: list[str]) -> str:
    """The compiler's file (resolved path, size, mtime): a failure marker is retried once it changes."""
    path = os.path.realpath(shutil.which(cc[0]) or cc[0])
    try:
        st = os.stat(path)
    except OSError:
        return path
    return f"{path} size={st.st_size} mtime_ns={st.st_mtime_ns}"


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _verified(lib: str) -> bool:
    """True when ``lib`` exists and its bytes match the digest written after it was built.

    A library is only ever put in place whole (written to a temporary name, then renamed), so a file that
    passes here and is then replaced by another process before it is loaded is complete as well."""
    try:
        with open(lib + ".sha256", encoding="ascii") as f:
            expected = f.read().split()[0]
        return _sha256(lib) == expected
    except (OSError, ValueError, IndexError):
        return False


def _write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and a rename: readers see all or nothing."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide it from other users of a shared cache
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _lock_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _take_lock(fd: int, path: str) -> None:
    """flock ``fd``, polling until ``STRUCTLIN_NATIVE_LOCK_TIMEOUT``; raise :class:`BuildLockTimeout` then.

    Where the file system has no flock the build goes ahead unlocked (every write is atomic anyway)."""
    import fcntl

    timeout = _lock_timeout()
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BuildLockTimeout(
                    f"the build lock {path} is held by {_lock_holder(fd)} and was not released within "
                    f"{timeout:g} s, so the pure-PyTorch path is used. The lock is freed when that process "
                    "finishes its build or ends: resume (kill -CONT) or end it if it is stopped or hung. "
                    "STRUCTLIN_NATIVE_LOCK_TIMEOUT sets the wait in seconds; STRUCTLIN_NATIVE=0 skips the "
                    "native kernels") from None
            time.sleep(min(_LOCK_POLL_S, left))
        except OSError:
            return
        else:
            with contextlib.suppress(OSError):  # the pid is only for the message of a process that waits
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return


@contextlib.contextmanager
def _build_lock(out_dir: str) -> Iterator[None]:
    """Hold ``out_dir/.lock`` (waiting a bounded time for it) so that one process at a time builds."""
    path = os.path.join(out_dir, ".lock")
    try:
        import fcntl  # noqa: F401 -- POSIX only; elsewhere builds are unlocked

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        _take_lock(fd, path)
        yield
    finally:
        os.close(fd)  # releases the lock


def _check_failed_before(lib: str, stamp: str) -> None:
    """Raise if building ``lib`` failed before with this compiler file; a marker from another (or an
    unreadable marker) is stale and is retried."""
    marker = lib + ".failed"
    try:
        with open(marker, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and record.get("compiler") == stamp:
        raise RuntimeError(f"build failed earlier with this compiler ({marker}; delete it to retry): "
                           f"{record.get('reason')}")


def _describe_failure(cmd: list[str], done: subprocess.CompletedProcess) -> str:
    """One line: the command, how it ended and the start of its output (the first errors)."""
    output = " ".join(done.stdout.decode(errors="replace").split())[:800]
    code = done.returncode
    ended = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return f"`{shlex.join(cmd)}` {ended}" + (f": {output}" if output else " and printed nothing")


def _compile(cc: list[str], lib: str, extra: list[str], stamp: str) -> None:
    """Compile kernels.c into ``lib``, then write its digest (both atomically); on failure write a marker
    saying why, with the compiler's stamp, and raise."""
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=os.path.dirname(lib))
    os.close(fd)
    try:
        for march in (_NATIVE_FLAGS, []):
            flags = _BASE_FLAGS + march + extra + [_SRC, "-o"]
            done = _run(cc + flags + [tmp])
            if done.returncode == 0:
                break
        else:
            reason = _describe_failure(cc + flags + [lib], done)
            _write_atomic(lib + ".failed", json.dumps({"compiler": stamp, "reason": reason}).encode())
            raise RuntimeError(f"build failed: {reason}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename, so a crash cannot leave a zero-filled file
        digest = _sha256(tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, lib)
        _write_atomic(lib + ".sha256", f"{digest}  {os.path.basename(lib)}\n".encode())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lib + ".failed")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _build(cc: list[str], out_dir: str, variant: str, extra: list[str]) -> str:
    """Return the path of a verified library of ``variant``, building it (under the lock) if needed.

    A library that fails verification is rebuilt, never loaded; a remembered failure is raised again."""
    lib = os.path.join(out_dir, f"libstructlin_kernels_{variant}.so")
    if _verified(lib):
        return lib
    stamp = _compiler_stamp(cc)
    _check_failed_before(lib, stamp)
    os.makedirs(out_dir, exist_ok=True)
    with _build_lock(out_dir):
        if _verified(lib):  # built by another process meanwhile
            return lib
        _check_failed_before(lib, stamp)
        _compile(cc, lib, extra, stamp)
    return lib


def _bind(lib: ctypes.CDLL) -> dict:
    P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    global _vector_bytes
    for name in ("sl_abi_version", "sl_parallel_backend", "sl_vector_bytes"):
        getattr(lib, name).argtypes = []
        getattr(lib, name).restype = INT
    got = lib.sl_abi_version()
    if got != _ABI_VERSION:
        raise RuntimeError(f"ABI version {got}, expected {_ABI_VERSION}")
    _vector_bytes = lib.sl_vector_bytes()
    fns = {}
    for sfx, dtype, scalar in (("f32", torch.float32, ctypes.c_float),
                               ("f64", torch.float64, ctypes.c_double)):
        sig = {
            "sl_dct_reorder": [P, P, I64, I64, INT],
            "sl_dct_unreorder": [P, P, I64, I64, INT],
            "sl_dct_post": [P, P, P, P, I64, I64, INT],
            "sl_idct_pre": [P, P, P, P, I64, I64, INT],
            "sl_fwht": [P, I64, I64, scalar, INT],
            "sl_gather": [P, P, P, I64, I64, I64, INT],
            "sl_bin_map": [P, P, P, P, P, I64, I64, INT],
            "sl_ff_gather_scale": [P, P, P, P, I64, I64, I64, I64, I64, I64, INT],
            "sl_ff_scale_sum": [P, P, P, P, I64, I64, I64, I64, I64, I64, INT],
            "sl_ff_colsum": [P, P, P, P, I64, I64, I64, I64, I64, I64, INT],
            "sl_bin_grad_map": [P, P, P, P, P, P, I64, I64, INT],
            "sl_colsum_scale": [P, P, P, P, I64, I64, INT, INT],
        }
        returning = {  # these return 0, or -1 when a workspace could not be allocated
            "sl_acdc_forward": [P] * 11 + [I64] * 5 + [INT, INT],
            "sl_acdc_backward": [P] * 16 + [I64] * 5 + [INT, INT],
        }
        sig["sl_fft_real"] = [P, P, P, P, I64, I64, INT, INT]
        row = []
        later = {  # appended: the indices above stay
            "sl_pair_map": [P, P, P, P, I64, I64, I64, INT],
            "sl_dct_dim": [P, P, P, P, P, P, I64, I64, I64, INT, INT],
            "sl_dct_reorder_rows": [P, P, P, I64, I64, I64, INT, INT],
        }
        for name, argtypes in (*sig.items(), *returning.items(), *later.items()):
            f = getattr(lib, f"{name}_{sfx}")
            f.argtypes = argtypes
            f.restype = INT if name in returning or name == "sl_dct_dim" else None
            row.append(f)
        fns[dtype] = tuple(row)
    return fns


def _load() -> dict | None:
    global _tried, _status, _fns
    with _lock:
        if _tried:
            return _fns
        try:
            wanted, raw = _requested()
            if wanted is False:
                _status = f"disabled (STRUCTLIN_NATIVE={raw})"
                return None
            try:
                _fns, _status = _build_and_bind()
            except Exception as e:  # noqa: BLE001 -- any failure disables the native path
                _fns = None
                _status = f"unavailable: {type(e).__name__}: {e}"
                if wanted or isinstance(e, BuildLockTimeout):
                    _warn(_status)
            return _fns
        finally:
            _tried = True  # set last: other threads wait on _lock until then


def _build_and_bind() -> tuple[dict, str]:
    cc = _find_compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC)")
    out_dir = _build_dir(cc)
    # OpenMP first: loaded next to torch it shares torch's libgomp thread pool
    variants = [("openmp", ["-fopenmp"]), ("pthreads", [])]
    if os.environ.get("STRUCTLIN_NATIVE_OPENMP", "").strip() == "0":
        variants = variants[1:]
    errors = []
    for variant, extra in variants:
        try:
            lib_path = _build(cc, out_dir, variant, extra)
            return _bind(ctypes.CDLL(lib_path)), f"loaded ({variant}) {lib_path}"
        except BuildLockTimeout:
            raise  # the other variant waits for the same lock
        except Exception as e:  # noqa: BLE001 -- try the next variant
            errors.append(f"[{variant}] {type(e).__name__}: {e}")
    raise RuntimeError("; ".join(errors))


def available() -> bool:
    """True if the native kernels are loaded (the first call builds/loads them)."""
    return (_fns if _tried else _load()) is not None


def native_status() -> str:
    """Why the native path is (un)available; triggers the first load."""
    if not _tried:
        _load()
    return _status


# --------------------------------------------------------------------------
# Tensor wrappers


def _fail(what: str) -> None:
    if (_fns if _tried else _load()) is None:
        raise RuntimeError(f"structlin native kernels {_status}")
    raise ValueError(f"{what}: tensors must be CPU, contiguous, all float32 or all float64, "
                     "2-D (complex ones (rows, n // 2 + 1, 2)) with matching shapes, and the "
                     "output must not be the input")


def _table(t: torch.Tensor):
    fns = _fns if _tried else _load()
    return None if fns is None else fns.get(t.dtype)


# The checks below are written inline (each tensor attribute costs ~50 ns).


def dct_reorder(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[:, i] = x[:, 2i], out[:, n-1-i] = x[:, 2i+1]; x, out: (rows, n)."""
    t = _table(x)
    pi, po = x.data_ptr(), out.data_ptr()
    if (t is None or (pi == po and pi) or not (x.is_cpu and out.is_cpu and x.dtype == out.dtype)
            or not (x.is_contiguous() and out.is_contiguous())
            or x.dim() != 2 or out.shape != x.shape):
        _fail("dct_reorder")
    rows, n = x.shape
    t[0](pi, po, rows, n, torch.get_num_threads())
    return out


def dct_unreorder(v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Inverse of dct_reorder: out[:, 2i] = v[:, i], out[:, 2i+1] = v[:, n-1-i]."""
    t = _table(v)
    pi, po = v.data_ptr(), out.data_ptr()
    if (t is None or (pi == po and pi) or not (v.is_cpu and out.is_cpu and v.dtype == out.dtype)
            or not (v.is_contiguous() and out.is_contiguous())
            or v.dim() != 2 or out.shape != v.shape):
        _fail("dct_unreorder")
    rows, n = v.shape
    t[1](pi, po, rows, n, torch.get_num_threads())
    return out


def dct_post(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """DCT-II post-twiddle. z: (rows, m, 2) real view of rfft output, a, b: (m,),
    out: (rows, n).  out[k] = a Re z_k + b Im z_k, out[n-k] = b Re z_k - a Im z_k."""
    t = _table(out)
    if t is None or out.dim() != 2:
        _fail("dct_post")
    rows, n = out.shape
    m = n // 2 + 1
    d = out.dtype
    if (not (out.is_cpu and z.is_cpu and a.is_cpu and b.is_cpu)
            or not (z.dtype == d and a.dtype == d and b.dtype == d)
            or not (out.is_contiguous() and z.is_contiguous() and a.is_contiguous()
                    and b.is_contiguous())
            or z.shape != (rows, m, 2) or a.shape != (m,) or b.shape != (m,)):
        _fail("dct_post")
    t[2](z.data_ptr(), a.data_ptr(), b.data_ptr(), out.data_ptr(), rows, n,
         torch.get_num_threads())
    return out


def idct_pre(X: torch.Tensor, a: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """DCT-III pre-twiddle. X: (rows, n), a, b: (m,), z: (rows, m, 2) real view of
    the irfft input.  z_k = (a X_k + b Y, b X_k - a Y), Y = X[n-k] (0 for k = 0)."""
    t = _table(X)
    if t is None or X.dim() != 2:
        _fail("idct_pre")
    rows, n = X.shape
    m = n // 2 + 1
    d = X.dtype
    if (not (X.is_cpu and z.is_cpu and a.is_cpu and b.is_cpu)
            or not (z.dtype == d and a.dtype == d and b.dtype == d)
            or not (X.is_contiguous() and z.is_contiguous() and a.is_contiguous()
                    and b.is_contiguous())
            or z.shape != (rows, m, 2) or a.shape != (m,) or b.shape != (m,)):
        _fail("idct_pre")
    t[3](X.data_ptr(), a.data_ptr(), b.data_ptr(), z.data_ptr(), rows, n,
         torch.get_num_threads())
    return z


def pair_map(z: torch.Tensor, p: torch.Tensor, q: torch.Tensor, out: torch.Tensor, outer: int, n: int,
             inner: int) -> torch.Tensor:
    """The n-D DCT's pair map along one dimension in one pass: complex ``z`` and ``out`` of shape
    ``(outer, n, inner)`` seen as real ``(…, 2)`` views, complex ``p``, ``q`` ``(n,)`` as ``(n, 2)``:
    ``out[o, k] = p_k z[o, k] + q_k z[o, (n − k) mod n]``."""
    t = _table(out)
    d = out.dtype
    if (t is None or not all(v.is_cpu and v.dtype == d and v.is_contiguous() for v in (z, p, q, out))
            or z.shape != (outer, n, inner, 2) or out.shape != z.shape or p.shape != (n, 2) or q.shape != (n, 2)
            or z.data_ptr() == out.data_ptr()):
        _fail("pair_map")
    t[15](z.data_ptr(), p.data_ptr(), q.data_ptr(), out.data_ptr(), outer, n, inner, torch.get_num_threads())
    return out


def fwht_(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """In place: each row of x (rows, n), n a power of two, becomes
    scale * (row @ H_n) with H_n the Sylvester-ordered Hadamard matrix."""
    t = _table(x)
    if t is None or not (x.is_cpu and x.is_contiguous()) or x.dim() != 2:
        _fail("fwht_")
    rows, n = x.shape
    if n & (n - 1) or n < 1:
        raise ValueError(f"fwht_: n = {n} is not a power of two")
    t[4](x.data_ptr(), rows, n, scale, torch.get_num_threads())
    return x


def gather(src: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[:, j] = src[:, index[j]], or 0 where index[j] < 0. src: (rows, n_src), index: (n_dst,) int64
    with entries < n_src, out: (rows, n_dst)."""
    t = _table(src)
    if (t is None or not (src.is_cpu and out.is_cpu and index.is_cpu and src.dtype == out.dtype)
            or index.dtype != torch.int64 or not (src.is_contiguous() and out.is_contiguous() and index.is_contiguous())
            or src.dim() != 2 or out.dim() != 2 or index.dim() != 1 or out.shape != (src.shape[0], index.shape[0])
            or (index.numel() and int(index.max()) >= src.shape[1])):
        _fail("gather")
    rows, n_src = src.shape
    t[5](src.data_ptr(), index.data_ptr(), out.data_ptr(), rows, n_src, index.shape[0], torch.get_num_threads())
    return out


def _bins_ok(*complex_views: torch.Tensor) -> bool:
    first = complex_views[0]
    return all(
        t.is_cpu and t.dtype == first.dtype and t.is_contiguous() and t.dim() == 3 and t.shape[2] == 2
        and t.shape == first.shape for t in complex_views
    )


def bin_map(z: torch.Tensor, m00: torch.Tensor, m01: torch.Tensor, m11: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """ACDC per-bin map. z, out: (rows, m, 2) real views of complex tensors (out may be z); m00, m01, m11: (m,).
    out = (m00 R + m01 I, m01 R + m11 I) per bin."""
    t = _table(z)
    m = z.shape[1] if z.dim() == 3 else -1
    if t is None or not _bins_ok(z, out) or any(
        c.dtype != z.dtype or not c.is_cpu or not c.is_contiguous() or c.shape != (m,) for c in (m00, m01, m11)
    ):
        _fail("bin_map")
    t[6](z.data_ptr(), m00.data_ptr(), m01.data_ptr(), m11.data_ptr(), out.data_ptr(), z.shape[0], m,
         torch.get_num_threads())
    return out


# Fastfood kernels. Layouts: `rows` rows of `nb` blocks of length `d` (a (rows, nb, d) or (rows, nb * d)
# contiguous tensor); the other operand is addressed as base + r * ld + j * jstride + i.


def _ff_ok(dtype, *tensors) -> bool:
    return all(t is None or (t.is_cpu and t.dtype == dtype and t.is_contiguous()) for t in tensors)


def _ff_extent(idx, nb: int, d: int, jstride: int, nlim: int) -> int:
    """One past the last element a row of the second operand is read at (relative to the row's start)."""
    if idx is None:
        return max(0, min((nb - 1) * jstride + d, nlim))
    return (nb - 1) * jstride + (int(idx.max()) + 1 if idx.numel() else 0)


def _ff_index_ok(idx, size) -> bool:
    return idx is None or (idx.is_cpu and idx.dtype == torch.int64 and idx.is_contiguous() and idx.numel() == size)


def ff_gather_scale(src: torch.Tensor, idx, D: torch.Tensor, out: torch.Tensor, ld: int, jstride: int,
                    nlim: int) -> torch.Tensor:
    """out[r, j, k] = D[j, k] * src.flat[r * ld + j * jstride + i] with i = idx[j, k] (all >= 0), or
    i = k when idx is None (0 where k >= nlim). out: (rows, nb, d); D, idx: (nb, d); src must hold every
    element addressed (checked against its size)."""
    t = _table(out)
    if t is None or out.dim() != 3 or D.shape != out.shape[1:] or not _ff_ok(out.dtype, src, D, out) \
            or not _ff_index_ok(idx, D.numel()) or src.data_ptr() == out.data_ptr() \
            or (idx is not None and idx.numel() and int(idx.min()) < 0):
        _fail("ff_gather_scale")
    rows, nb, d = out.shape
    if rows and (rows - 1) * ld + _ff_extent(idx, nb, d, jstride, nlim) > src.numel():
        _fail("ff_gather_scale (source too small)")
    t[7](src.data_ptr(), 0 if idx is None else idx.data_ptr(), D.data_ptr(), out.data_ptr(), rows, nb, d, ld,
         jstride, nlim, torch.get_num_threads())
    return out


def ff_scale_sum(src: torch.Tensor, D: torch.Tensor, bias, out: torch.Tensor, nsum: int, d: int, ld: int,
                 nlim: int) -> torch.Tensor:
    """out[r, k] = sum_{j < nsum} D.flat[j * d + k] * src.flat[r * ld + j * d + k] (+ bias[k]) for k < nlim,
    0 for k >= nlim. out: (rows, n_dst). In place allowed when nsum == 1, out is src and ld == n_dst."""
    t = _table(out)
    if t is None or out.dim() != 2 or not _ff_ok(out.dtype, src, D, bias, out):
        _fail("ff_scale_sum")
    rows, n_dst = out.shape
    e = min(nlim, n_dst)
    if (D.numel() < (nsum - 1) * d + e or (bias is not None and bias.numel() < e)
            or (rows and (rows - 1) * ld + (nsum - 1) * d + e > src.numel())
            or (src.data_ptr() == out.data_ptr() and (nsum != 1 or ld != n_dst))):
        _fail("ff_scale_sum")
    t[8](src.data_ptr(), D.data_ptr(), 0 if bias is None else bias.data_ptr(), out.data_ptr(), rows, nsum, d, ld,
         nlim, n_dst, torch.get_num_threads())
    return out


def ff_colsum(a: torch.Tensor, b: torch.Tensor, idx, acc: torch.Tensor, ld: int, jstride: int,
              nlim: int) -> torch.Tensor:
    """acc[j, k] = sum_r a[r, j, k] * b.flat[r * ld + j * jstride + i] with i = idx[j, k], or i = k when idx is
    None (terms with j * jstride + k >= nlim count 0). a: (rows, nb, d); acc, idx: (nb, d)."""
    t = _table(a)
    if t is None or a.dim() != 3 or acc.shape != a.shape[1:] or not _ff_ok(a.dtype, a, b, acc) \
            or not _ff_index_ok(idx, acc.numel()):
        _fail("ff_colsum")
    rows, nb, d = a.shape
    if rows and (rows - 1) * ld + _ff_extent(idx, nb, d, jstride, nlim) > b.numel():
        _fail("ff_colsum (second operand too small)")
    t[9](a.data_ptr(), b.data_ptr(), 0 if idx is None else idx.data_ptr(), acc.data_ptr(), rows, nb, d, ld,
          jstride, nlim, torch.get_num_threads())
    return acc


def bin_grad_map_(g: torch.Tensor, u: torch.Tensor, m00: torch.Tensor, m01: torch.Tensor, m11: torch.Tensor,
                  acc: torch.Tensor) -> torch.Tensor:
    """Sums over rows, per bin k: acc[k] = (Σ GR UR, Σ GR UI + GI UR, Σ GI UI); then :func:`bin_map` applied to
    ``g`` in place, in one pass. g, u: (rows, m, 2); m00, m01, m11: (m,); acc: (m, 3). Returns ``g``."""
    t = _table(g)
    m = g.shape[1] if g.dim() == 3 else -1
    if t is None or not _bins_ok(g, u) or not (
        acc.is_cpu and acc.dtype == g.dtype and acc.is_contiguous() and acc.shape == (m, 3)
    ) or any(c.dtype != g.dtype or not c.is_cpu or not c.is_contiguous() or c.shape != (m,) for c in (m00, m01, m11)):
        _fail("bin_grad_map_")
    t[10](g.data_ptr(), u.data_ptr(), m00.data_ptr(), m01.data_ptr(), m11.data_ptr(), acc.data_ptr(), g.shape[0], m,
          torch.get_num_threads())
    return g


def colsum_scale_(g: torch.Tensor, x: torch.Tensor, a: torch.Tensor, acc: torch.Tensor,
                  relu_mask: bool = False) -> torch.Tensor:
    """``acc[k] = Σ_r g[r, k] x[r, k]``, then ``g *= a`` in place, in one pass; with ``relu_mask``, ``g`` is also
    zeroed where ``x <= 0``. g, x: (rows, n); a, acc: (n,). Returns ``g``."""
    t = _table(g)
    if t is None or g.dim() != 2 or x.shape != g.shape or a.shape != g.shape[1:] or acc.shape != g.shape[1:] \
            or not _ff_ok(g.dtype, g, x, a, acc) or g.data_ptr() == x.data_ptr():
        _fail("colsum_scale_")
    t[11](g.data_ptr(), x.data_ptr(), a.data_ptr(), acc.data_ptr(), g.shape[0], g.shape[1], int(relu_mask),
          torch.get_num_threads())
    return g


# --------------------------------------------------------------------------
# The ACDC cascade (kernels.c, "ACDC cascade, a chunk of W rows at a time"). Sizes: `rows` rows, blocks of
# size n (a power of two), k blocks, m = n // 2 + 1 bins. Index tables are int64; an entry -1 reads as 0.
# Tables the kernels trust are checked here; a table seen before (same storage, version and size) is not
# checked again, so a layer's cached tables cost nothing per call.

_checked: dict = {}


class DctPlan(NamedTuple):
    """The tables of :func:`dct_dim` for one length, dtype and direction, checked once (:func:`dct_plan`)."""

    n: int
    dtype: torch.dtype
    inverse: bool
    pointers: tuple  # ab, tw, br, pos
    tensors: tuple  # kept alive with the plan


def dct_plan(ab: torch.Tensor, tw: torch.Tensor, br: torch.Tensor, pos: torch.Tensor, inverse: bool) -> DctPlan:
    """Check the tables of :func:`dct_dim` once: ``tw``, ``br`` of ``transforms._native_fft.fft_tables`` for a
    power-of-two length ``n ≥ 2`` (``m = n/2``), ``pos`` ``(n,)`` each column's position in Makhoul's order, and
    ``ab`` ``(m + 1, 2)``: the post (forward) or pre (inverse) twiddles ``(a, b)`` of bin ``br[p]`` at row ``p``
    (bin ``m`` at row ``m``), in ``tw``'s dtype."""
    n = pos.shape[0] if pos.dim() == 1 else -1
    m = n // 2
    if (_table(tw) is None or n < 2 or n & (n - 1) or not _dense_ok(tw.dtype, ab, tw) or ab.shape != (m + 1, 2)
            or tw.numel() < 4 * m or not index_ok(br, m, m, 0) or not index_ok(pos, n, n, 0)):
        _fail("dct_plan")
    tensors = (ab, tw, br, pos)
    return DctPlan(n, tw.dtype, bool(inverse), tuple(t.data_ptr() for t in tensors), tensors)


def dct_dim(src: torch.Tensor, dst: torch.Tensor, plan: DctPlan, outer: int, inner: int) -> torch.Tensor:
    """DCT-II (or, for an inverse plan, DCT-III) along the middle dimension of ``src`` seen as
    ``(outer, n, inner)`` into ``dst`` (a contiguous tensor of the same shape; it may be ``src`` itself), by the
    cascade's FFT, one pass per chunk of rows (``inner = 1``) or of ``inner`` positions (see :func:`dct_plan`)."""
    d, n = plan.dtype, plan.n
    if not (src.dtype == d and dst.dtype == d and src.is_cpu and dst.is_cpu and src.is_contiguous()
            and dst.is_contiguous() and dst.shape == src.shape and outer >= 0 and inner >= 1
            and src.numel() == outer * n * inner):
        _fail("dct_dim")
    if _fns[d][16](src.data_ptr(), dst.data_ptr(), *plan.pointers, outer, n, inner, int(plan.inverse),
                   torch.get_num_threads()):
        raise MemoryError("structlin native kernels: dct_dim could not allocate its workspace")
    return dst


def dct_reorder_rows(x: torch.Tensor, idx: torch.Tensor, out: torch.Tensor, inverse: bool) -> torch.Tensor:
    """``out[o, r] = reorder(x[o, idx[r]])`` (with ``inverse``, the inverse reorder) for ``x``, ``out``
    ``(outer, R, n)`` and ``idx`` ``(R,)``: the n-D DCT's reorder along the last and adjacent dimensions in one
    pass."""
    t = _table(x)
    if (t is None or x.dim() != 3 or not _dense_ok(x.dtype, x, out) or out.shape != x.shape
            or (x.numel() and x.data_ptr() == out.data_ptr()) or not index_ok(idx, x.shape[1], x.shape[1], 0)):
        _fail("dct_reorder_rows")
    outer, rows, n = x.shape
    t[17](x.data_ptr(), idx.data_ptr(), out.data_ptr(), outer, rows, n, int(inverse), torch.get_num_threads())
    return out


def lanes(dtype: torch.dtype) -> int:
    """Rows per chunk of the cascade kernels (the vector width in elements of ``dtype``); 0 without them."""
    fns = _fns if _tried else _load()
    if fns is None or dtype not in fns:
        return 0
    return _vector_bytes * 8 // torch.finfo(dtype).bits


def index_ok(index, length: int, size: int, low: int = -1) -> bool:
    """Whether ``index`` is None, or an int64 CPU contiguous ``(length,)``/``(rows, length)`` table with entries
    in ``[low, size)``. A table that passed before (same storage, version and sizes) is not read again."""
    if index is None:
        return True
    if not (index.dtype == torch.int64 and index.is_cpu and index.is_contiguous() and index.shape[-1] == length):
        return False
    key = None
    if not index.is_inference():
        key = (index.data_ptr(), index._version, index.numel(), length, size, low)
        if _checked.get(key):
            return True
    ok = index.numel() == 0 or (int(index.min()) >= low and int(index.max()) < size)
    if ok and key is not None:
        if len(_checked) > 4096:
            _checked.clear()
        _checked[key] = True
    return ok


def _dense_ok(dtype, *tensors) -> bool:
    return all(t.is_cpu and t.dtype == dtype and t.is_contiguous() for t in tensors)


def _pointers(tensors, count: int) -> torch.Tensor:
    """An int64 tensor of ``count`` data pointers (0 for None)."""
    return torch.tensor([0 if t is None else t.data_ptr() for t in tensors] + [0] * (count - len(tensors)),
                        dtype=torch.int64)


def _table_size(n: int) -> int:
    """Length of the cascade's table for blocks of size n (see kernels.c): 4 m twiddles, 3 (m + 1) trig."""
    return 4 * (n // 2) + 3 * (n // 2 + 1)


def _cascade_checks(what, x, n_in, A, D, tw, br, perm, B=None) -> tuple[int, int]:
    """``(k, n)`` after the checks every cascade call shares."""
    t = _table(A)
    k, n = A.shape if A.dim() == 2 else (-1, -1)
    if (t is None or n < 2 or n & (n - 1) or x.dim() != 2 or x.shape[1] != n_in or D.shape != (k, n)
            or not _dense_ok(A.dtype, x, A, D, tw) or tw.numel() != _table_size(n)
            or not index_ok(br, n // 2, n // 2, 0)
            or (perm is not None and (perm.shape != (k - 1, n) or not index_ok(perm, n, n, 0)))
            or (B is not None and (B.shape != (k, n) or not _dense_ok(A.dtype, B)))):
        _fail(what)
    return k, n


def acdc_forward(x, in_inverse, A, D, perm, out_index, tw, br, kept, y, relu: bool, B=None) -> torch.Tensor:
    """The cascade forward, ``x`` (rows, n_in) → ``y`` (rows, n_out), in one parallel region over chunks of
    rows. Column c of ``x`` is position ``in_inverse[c]`` of the first block's input (−1: unused; positions no
    column reaches are 0; None: n_in == n, the identity); ``A``, ``D`` (k, n) are the diagonals in natural order
    (the blocks run in Makhoul's order); ``perm`` (k − 1, n) permutes between blocks in Makhoul's order (None:
    none), ``relu`` applies a ReLU after each permutation; column j of ``y`` is position ``out_index[j]`` of the
    last block's output (None: n_out == n). ``kept``: None, or k tensors (rows, n) or None receiving each
    block's input. ``tw``, ``br``: the tables (see kernels.c). ``B``: None, or (k, n) offsets added to each
    block's output (natural order)."""
    k, n = _cascade_checks("acdc_forward", x, x.shape[1] if x.dim() == 2 else -1, A, D, tw, br, perm, B)
    rows, n_in = x.shape
    n_out = n if out_index is None else out_index.shape[0]
    kept_ok = kept is None or (len(kept) == k and all(
        v is None or (v.shape == (rows, n) and _dense_ok(A.dtype, v)) for v in kept))
    if (not _dense_ok(A.dtype, y) or y.shape != (rows, n_out) or not kept_ok
            or (in_inverse is None and n_in != n) or not index_ok(in_inverse, n_in, n)
            or not index_ok(out_index, n_out, n)):
        _fail("acdc_forward")
    pointers = None if kept is None else _pointers(kept, k)
    status = _table(A)[13](
        x.data_ptr(), _ptr(in_inverse), A.data_ptr(), D.data_ptr(), _ptr(B), _ptr(perm), _ptr(out_index), tw.data_ptr(),
        br.data_ptr(), _ptr(pointers), y.data_ptr(), rows, n, k, n_in, n_out, int(relu), torch.get_num_threads())
    if status:
        raise MemoryError("structlin native kernels: acdc_forward could not allocate its workspace")
    return y


def acdc_backward(g, x, in_inverse, out_index, blocks, A, D, perm, perm_inverse, tw, br, grad_x, grad_A, grad_D,
                  relu: bool, B=None, grad_B=None) -> torch.Tensor:
    """The cascade backward (tables as in :func:`acdc_forward`): from the output gradient ``g`` (rows, n_out)
    the input gradient ``grad_x`` (rows, n_in) and the gradients ``grad_A``, ``grad_D`` (k, n) of the diagonals.
    The block inputs are the k tensors ``blocks`` (rows, n) (then ``x`` is None), or, with ``blocks`` None,
    recomputed from ``x`` (rows, n_in). With the block output offsets ``B`` (k, n), their gradient goes to
    ``grad_B`` (k, n). Returns ``grad_x``."""
    rows, n_in = grad_x.shape if grad_x.dim() == 2 else (-1, -1)
    source = x if x is not None else grad_x  # without x (blocks given) only its shape is checked
    k, n = _cascade_checks("acdc_backward", source, n_in, A, D, tw, br, perm, B)
    n_out = g.shape[1] if g.dim() == 2 else -1
    blocks_ok = blocks is None or (len(blocks) == k and all(
        v.shape == (rows, n) and _dense_ok(A.dtype, v) for v in blocks))
    if (not _dense_ok(A.dtype, g, grad_x, grad_A, grad_D) or g.shape != (rows, n_out) or grad_A.shape != (k, n)
            or grad_D.shape != (k, n) or not blocks_ok
            or (in_inverse is None and n_in != n) or (out_index is None and n_out != n)
            or not index_ok(in_inverse, n_in, n) or not index_ok(out_index, n_out, n)
            or (perm is None) != (perm_inverse is None)
            or (perm_inverse is not None and (perm_inverse.shape != perm.shape or not index_ok(perm_inverse, n, n, 0)))
            or (x is None) == (blocks is None) or (x is not None and x.shape != (rows, n_in))
            or grad_x.data_ptr() in (g.data_ptr(), _ptr(x))
            or (B is None) != (grad_B is None) or (grad_B is not None and (grad_B.shape != (k, n)
                                                                          or not _dense_ok(A.dtype, grad_B)))):
        _fail("acdc_backward")
    pointers = None if blocks is None else _pointers(blocks, k)
    status = _table(A)[14](
        g.data_ptr(), _ptr(x), _ptr(in_inverse), _ptr(out_index), _ptr(pointers), A.data_ptr(), D.data_ptr(),
        _ptr(B), _ptr(perm), _ptr(perm_inverse), tw.data_ptr(), br.data_ptr(), grad_x.data_ptr(), grad_A.data_ptr(),
        grad_D.data_ptr(), _ptr(grad_B), rows, n, k, n_in, n_out, int(relu), torch.get_num_threads())
    if status:
        raise MemoryError("structlin native kernels: acdc_backward could not allocate its workspace")
    return grad_x


def fft_real(src: torch.Tensor, dst: torch.Tensor, tw: torch.Tensor, br: torch.Tensor, inverse: bool) -> torch.Tensor:
    """The cascade's own FFT on rows: ``src`` (rows, n) → ``dst`` (rows, n // 2 + 1, 2) as ``torch.fft.rfft``,
    or, with ``inverse``, back as ``torch.fft.irfft``. For tests."""
    t = _table(src)
    n = dst.shape[1] if inverse and dst.dim() == 2 else src.shape[1] if src.dim() == 2 else -1
    real, spectrum = (dst, src) if inverse else (src, dst)
    if (t is None or n < 2 or n & (n - 1) or not _dense_ok(src.dtype, src, dst, tw) or real.dim() != 2
            or spectrum.shape != (real.shape[0], n // 2 + 1, 2) or tw.numel() < 4 * (n // 2)
            or not index_ok(br, n // 2, n // 2, 0)):
        _fail("fft_real")
    t[12](src.data_ptr(), dst.data_ptr(), tw.data_ptr(), br.data_ptr(), real.shape[0], n, int(inverse),
          torch.get_num_threads())
    return dst


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()
