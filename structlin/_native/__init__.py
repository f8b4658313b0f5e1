"""Native CPU kernels (``kernels.c``), compiled on first use and loaded with ctypes.

The library is built lazily -- on the first call of any function here, never
at ``import structlin`` -- with the system C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) and cached under ``$STRUCTLIN_CACHE_DIR``, else
``$XDG_CACHE_HOME/structlin``, else ``~/.cache/structlin``, in a folder named
by a hash of the source, the compiler, the flags and the CPU.

``STRUCTLIN_NATIVE=0`` disables the native path.  Any failure (no compiler,
compile or load error) disables it as well; :func:`native_status` says why,
and a warning is issued only when ``STRUCTLIN_NATIVE=1`` was set explicitly.
Nothing here raises at import time.

Tensor wrappers (CPU, contiguous, all float32 or all float64; ``rows`` = size
of dim 0, ``n`` = signal length, ``m = n // 2 + 1``; complex tensors are passed
as ``torch.view_as_real`` views of shape ``(rows, m, 2)``):

    dct_reorder(x, out)      out = [x0, x2, x4, ..., x5, x3, x1] per row
    dct_unreorder(v, out)    inverse permutation
    dct_post(z, a, b, out)   DCT-II post-twiddle of z = rfft(reorder(x))
    idct_pre(X, a, b, z)     DCT-III pre-twiddle; x = unreorder(irfft(z, n))
    fwht_(x, scale)          in-place Walsh-Hadamard transform times scale

Twiddles (theta_k = pi * k / (2 n), k = 0 .. n // 2):
    dct_post:  a = 2 cos(theta), b = 2 sin(theta)   -> scipy.fft.dct(x, 2)
    idct_pre:  a = cos(theta) / 2, b = sin(theta) / 2 -> scipy.fft.idct(X, 2)
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

import torch

__all__ = [
    "available",
    "native_status",
    "dct_reorder",
    "dct_unreorder",
    "dct_post",
    "idct_pre",
    "fwht_",
]

_ABI_VERSION = 1
_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.c")
_LIBNAME = "libstructlin_kernels.so"
_BASE_FLAGS = ["-O3", "-std=gnu99", "-fPIC", "-shared", "-pthread"]
_NATIVE_FLAGS = ["-march=native"]

_lock = threading.Lock()
_tried = False
_status = "not loaded yet"
_fns: dict | None = None  # dtype -> (reorder, unreorder, post, ipre, fwht)


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


def _build(cc: list[str], out_dir: str) -> str:
    """Compile kernels.c into out_dir (atomically); return the library path."""
    lib = os.path.join(out_dir, _LIBNAME)
    if os.path.exists(lib):
        return lib
    os.makedirs(out_dir, exist_ok=True)
    lockf = None
    try:
        try:
            import fcntl

            lockf = open(os.path.join(out_dir, ".lock"), "w")
            fcntl.flock(lockf, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        if os.path.exists(lib):  # built by another process meanwhile
            return lib
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            errors = []
            for extra in (_NATIVE_FLAGS, []):
                r = _run(cc + _BASE_FLAGS + extra + [_SRC, "-o", tmp])
                if r.returncode == 0:
                    break
                errors.append(r.stdout.decode(errors="replace").strip()[-2000:])
            else:
                raise RuntimeError("compile failed:\n" + "\n---\n".join(errors))
            os.replace(tmp, lib)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    finally:
        if lockf is not None:
            lockf.close()
    return lib


def _bind(lib: ctypes.CDLL) -> dict:
    P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.sl_abi_version.argtypes = []
    lib.sl_abi_version.restype = INT
    got = lib.sl_abi_version()
    if got != _ABI_VERSION:
        raise RuntimeError(f"ABI version {got}, expected {_ABI_VERSION}")
    fns = {}
    for sfx, dtype, scalar in (("f32", torch.float32, ctypes.c_float),
                               ("f64", torch.float64, ctypes.c_double)):
        sig = {
            "sl_dct_reorder": [P, P, I64, I64, INT],
            "sl_dct_unreorder": [P, P, I64, I64, INT],
            "sl_dct_post": [P, P, P, P, I64, I64, INT],
            "sl_idct_pre": [P, P, P, P, I64, I64, INT],
            "sl_fwht": [P, I64, I64, scalar, INT],
        }
        row = []
        for name, argtypes in sig.items():
            f = getattr(lib, f"{name}_{sfx}")
            f.argtypes = argtypes
            f.restype = None
            row.append(f)
        fns[dtype] = tuple(row)
    return fns


def _load() -> dict | None:
    global _tried, _status, _fns
    with _lock:
        if _tried:
            return _fns
        _tried = True
        env = os.environ.get("STRUCTLIN_NATIVE", "").strip()
        if env == "0":
            _status = "disabled (STRUCTLIN_NATIVE=0)"
            return None
        try:
            cc = _find_compiler()
            if cc is None:
                raise RuntimeError("no C compiler found (set $CC)")
            ver = _run(cc + ["--version"]).stdout
            with open(_SRC, "rb") as f:
                src = f.read()
            h = hashlib.sha256()
            for part in (src, shutil.which(cc[0]).encode(), " ".join(cc).encode(), ver,
                         " ".join(_BASE_FLAGS + _NATIVE_FLAGS).encode(),
                         platform.machine().encode(), _cpu_flags().encode()):
                h.update(part)
                h.update(b"\0")
            lib_path = _build(cc, os.path.join(_cache_root(), h.hexdigest()[:20]))
            _fns = _bind(ctypes.CDLL(lib_path))
            _status = f"loaded {lib_path}"
        except Exception as e:  # noqa: BLE001 -- any failure disables the native path
            _fns = None
            _status = f"unavailable: {type(e).__name__}: {e}"
            if env == "1":
                warnings.warn(f"structlin native kernels {_status}", RuntimeWarning, stacklevel=3)
        return _fns


def available() -> bool:
    """True if the native kernels are (or could now be) loaded."""
    return (_fns if _tried else _load()) is not None


def native_status() -> str:
    """Why the native path is (un)available; triggers the first load."""
    if not _tried:
        _load()
    return _status


# --------------------------------------------------------------------------
# Tensor wrappers


def _get(t: torch.Tensor) -> tuple:
    fns = _fns if _tried else _load()
    if fns is None:
        raise RuntimeError(f"structlin native kernels {_status}")
    try:
        return fns[t.dtype]
    except KeyError:
        raise TypeError(f"native kernels need float32/float64, got {t.dtype}") from None


def _check(*ts: torch.Tensor) -> None:
    d = ts[0].dtype
    for t in ts:
        if not (t.is_cpu and t.dtype == d and t.is_contiguous()):
            raise ValueError("native kernels need CPU, contiguous tensors of one dtype")


def dct_reorder(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[:, i] = x[:, 2i], out[:, n-1-i] = x[:, 2i+1]; x, out: (rows, n)."""
    f = _get(x)[0]
    _check(x, out)
    rows, n = x.shape
    if out.shape != x.shape or out.data_ptr() == x.data_ptr():
        raise ValueError("dct_reorder: out must be a distinct tensor of x's shape")
    f(x.data_ptr(), out.data_ptr(), rows, n, torch.get_num_threads())
    return out


def dct_unreorder(v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Inverse of dct_reorder; v, out: (rows, n)."""
    f = _get(v)[1]
    _check(v, out)
    rows, n = v.shape
    if out.shape != v.shape or out.data_ptr() == v.data_ptr():
        raise ValueError("dct_unreorder: out must be a distinct tensor of v's shape")
    f(v.data_ptr(), out.data_ptr(), rows, n, torch.get_num_threads())
    return out


def dct_post(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """DCT-II post-twiddle. z: (rows, m, 2) real view of rfft output, a, b: (m,),
    out: (rows, n).  out[k] = a Re z_k + b Im z_k, out[n-k] = b Re z_k - a Im z_k."""
    f = _get(out)[2]
    _check(out, z, a, b)
    rows, n = out.shape
    m = n // 2 + 1
    if z.shape != (rows, m, 2) or a.shape != (m,) or b.shape != (m,):
        raise ValueError(f"dct_post: expected z {(rows, m, 2)}, a and b {(m,)}")
    f(z.data_ptr(), a.data_ptr(), b.data_ptr(), out.data_ptr(), rows, n,
      torch.get_num_threads())
    return out


def idct_pre(X: torch.Tensor, a: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """DCT-III pre-twiddle. X: (rows, n), a, b: (m,), z: (rows, m, 2) real view of
    the irfft input.  z_k = (a X_k + b Y, b X_k - a Y), Y = X[n-k] (0 for k = 0)."""
    f = _get(X)[3]
    _check(X, z, a, b)
    rows, n = X.shape
    m = n // 2 + 1
    if z.shape != (rows, m, 2) or a.shape != (m,) or b.shape != (m,):
        raise ValueError(f"idct_pre: expected z {(rows, m, 2)}, a and b {(m,)}")
    f(X.data_ptr(), a.data_ptr(), b.data_ptr(), z.data_ptr(), rows, n,
      torch.get_num_threads())
    return z


def fwht_(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """In place: each row of x (rows, n), n a power of two, becomes
    scale * (row @ H_n) with H_n the Sylvester-ordered Hadamard matrix."""
    f = _get(x)[4]
    _check(x)
    rows, n = x.shape
    if n & (n - 1) or n < 1:
        raise ValueError(f"fwht_: n = {n} is not a power of two")
    f(x.data_ptr(), rows, n, scale, torch.get_num_threads())
    return x
