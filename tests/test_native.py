"""The native kernels' loader: built on this machine, switched off on request, and a clean fallback.

Every scenario that builds, loads or damages a library runs in a child process with its own cache folder, so a
crash fails one test instead of ending the run, and the user's cache is never touched."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from structlin import _native

_COMPILER = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
needs_compiler = pytest.mark.skipif(_COMPILER is None, reason="no C compiler on this machine")

# Checks the transforms against scipy (on whichever path runs), then reports the loader's state and the warnings
# it issued, as one JSON line.
_PROBE = textwrap.dedent(
    """
    import json, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch, scipy.fft
        from structlin import _native
        from structlin.transforms import dct, fwht, native_status
        for _ in range(2):
            x = torch.randn(3, 10, dtype=torch.float64)
            assert (dct(x) - torch.from_numpy(scipy.fft.dct(x.numpy(), norm="ortho"))).abs().max() < 1e-10
            fwht(torch.randn(2, 8))
    ours = [str(w.message) for w in caught if str(w.message).startswith("structlin native kernels")]
    print(json.dumps({"available": _native.available(), "status": native_status(), "warnings": ours}))
    """
)

# Takes a build folder's lock the way a builder does (flock, its pid in the file), then stops itself.
_STOPPED_LOCK_HOLDER = textwrap.dedent(
    """
    import fcntl, os, signal, sys
    fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
    print("locked", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    """
)


def _environment(cache, **env) -> dict:
    """This process's environment without native-kernel settings, with ``cache`` as the cache folder."""
    base = {k: v for k, v in os.environ.items() if k not in ("STRUCTLIN_NATIVE", "STRUCTLIN_NATIVE_LOCK_TIMEOUT")}
    return {**base, "STRUCTLIN_CACHE_DIR": str(cache), **env}


def _probe(cache, timeout=300, **env) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE], env=_environment(cache, **env), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"the probe ended with {done.returncode}: {done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _library(cache):
    """The one library in a cache folder that holds one build."""
    (lib,) = cache.glob("*/libstructlin_kernels_*.so")
    return lib


@pytest.fixture(scope="session")
def built_cache(tmp_path_factory):
    """A cache folder holding one build, made once; tests copy it rather than compile again."""
    if _COMPILER is None:
        pytest.skip("no C compiler on this machine")
    cache = tmp_path_factory.mktemp("native") / "cache"
    result = _probe(cache)
    assert result["available"], result["status"]
    return cache


@needs_compiler
def test_native_kernels_build_where_a_compiler_exists():
    assert _native.available(), _native.native_status()
    assert _native.native_status().startswith("loaded")


def test_without_a_compiler_the_pure_pytorch_path_computes_the_same(tmp_path):
    result = _probe(tmp_path, CC="/nonexistent/cc")
    assert not result["available"] and result["status"].startswith("unavailable: RuntimeError: no C compiler found")
    assert result["warnings"] == []


_OFF = ["0", "false", "False", "OFF", " no ", "disable", "Disabled"]
_ON = ["1", "true", "On", "YES", "enabled"]


def test_every_usual_spelling_of_the_switch_is_understood(tmp_path):
    """Off spellings disable the kernels silently; on spellings make a failure (here: no compiler) warn; an unknown
    word warns and names the accepted ones."""
    script = textwrap.dedent(
        """
        import json, os, sys, warnings
        from structlin import _native
        results = {}
        for value in json.loads(sys.argv[1]):
            os.environ["STRUCTLIN_NATIVE"] = value
            _native._tried = False
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                status = _native.native_status()
            results[value] = [status, [str(w.message) for w in caught]]
        print(json.dumps(results))
        """
    )
    values = _OFF + _ON + ["maybe"]
    done = subprocess.run([sys.executable, "-c", script, json.dumps(values)], capture_output=True, text=True,
                          env=_environment(tmp_path, CC="/nonexistent/cc"), timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for value in _OFF:
        assert results[value] == [f"disabled (STRUCTLIN_NATIVE={value.strip()})", []], value
    for value in _ON:
        status, warned = results[value]
        assert status.startswith("unavailable: RuntimeError: no C compiler found"), value
        assert warned == [f"structlin native kernels: {status}"], value
    status, warned = results["maybe"]
    assert status.startswith("unavailable") and len(warned) == 1
    assert "STRUCTLIN_NATIVE='maybe' is not understood" in warned[0] and "false" in warned[0]


def _truncate(lib):
    data = lib.read_bytes()
    lib.write_bytes(data[: len(data) // 2])


def _zero_tail(lib):
    data = lib.read_bytes()
    half = len(data) // 2
    lib.write_bytes(data[:half] + bytes(len(data) - half))


@pytest.mark.parametrize("damage", [_truncate, _zero_tail], ids=["truncated", "zero-tailed"])
def test_a_damaged_library_in_the_cache_is_rebuilt_not_loaded(built_cache, tmp_path, damage):
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    lib = _library(cache)
    damage(lib)
    damaged = lib.read_bytes()
    result = _probe(cache)
    variant = lib.stem.rsplit("_", 1)[1]
    assert result["available"] and result["status"] == f"loaded ({variant}) {lib}", result["status"]
    rebuilt = lib.read_bytes()
    assert rebuilt != damaged
    assert (lib.parent / f"{lib.name}.sha256").read_text().split()[0] == hashlib.sha256(rebuilt).hexdigest()


@needs_compiler
def test_a_stopped_process_holding_the_build_lock_delays_the_first_use_a_bounded_time(built_cache, tmp_path):
    """The lock of a build folder with no library yet is held by a stopped process: the first use waits for
    STRUCTLIN_NATIVE_LOCK_TIMEOUT, then runs the pure-PyTorch path (correct results) and warns once."""
    cache = tmp_path / "cache"
    shutil.copytree(built_cache, cache)
    build_dir = _library(cache).parent
    for path in build_dir.glob("libstructlin_kernels_*"):
        path.unlink()
    with subprocess.Popen([sys.executable, "-c", _STOPPED_LOCK_HOLDER, str(build_dir)], stdout=subprocess.PIPE,
                          text=True) as holder:
        try:
            assert holder.stdout.readline() == "locked\n"
            started = time.monotonic()
            result = _probe(cache, timeout=90, STRUCTLIN_NATIVE_LOCK_TIMEOUT="1")
            elapsed = time.monotonic() - started
        finally:
            holder.kill()  # SIGKILL ends a stopped process too
    assert not result["available"] and elapsed < 60
    assert result["status"].startswith("unavailable: BuildLockTimeout: the build lock")
    assert f"held by process {holder.pid}" in result["status"] and "within 1 s" in result["status"]
    assert result["warnings"] == [f"structlin native kernels: {result['status']}"]


def _failure_markers(cache) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(cache.glob("*/*.failed"))]


def test_a_failed_build_is_remembered_with_its_command_status_and_output(tmp_path):
    """``CC=false`` fails without a word: the marker, and later runs' status, still say what ran and how it ended."""
    first = _probe(tmp_path, CC="false")
    markers = _failure_markers(tmp_path)
    assert not first["available"] and markers
    for marker in markers:
        assert marker["reason"].startswith("`false -O3 ")
        assert marker["reason"].endswith(" exited with status 1 and printed nothing")
        assert marker["reason"] in first["status"]
    again = _probe(tmp_path, CC="false")
    assert "build failed earlier with this compiler" in again["status"]
    assert all(marker["reason"] in again["status"] for marker in markers)


@needs_compiler
def test_a_failed_build_is_retried_once_the_compiler_changes(tmp_path):
    """The same ``$CC`` (same path, same ``--version``) first fails, then is fixed: the next run builds."""
    compiler = tmp_path / "stand-in-cc"
    version = 'if [ "$1" = --version ]; then echo "stand-in cc 1.0"; exit 0; fi\n'
    compiler.write_text(f"#!/bin/sh\n{version}exit 1\n")
    compiler.chmod(0o755)
    cache = tmp_path / "cache"
    assert not _probe(cache, CC=str(compiler))["available"]
    assert list(cache.glob("*/*.failed"))
    compiler.write_text(f'#!/bin/sh\n{version}exec {_COMPILER} "$@"\n')
    later = time.time() + 10  # a new mtime even where the clock is coarse
    os.utime(compiler, (later, later))
    result = _probe(cache, CC=str(compiler))
    assert result["available"], result["status"]


def test_wrappers_reject_bad_tensors():
    if not _native.available():
        pytest.skip(_native.native_status())
    import torch

    with pytest.raises(ValueError):
        _native.dct_reorder(torch.ones(2, 4), torch.ones(2, 4, dtype=torch.float64))


def test_gather_kernel_matches_index_select_with_zero_padding():
    if not _native.available():
        pytest.skip(_native.native_status())
    import torch

    for dtype in (torch.float32, torch.float64):
        src = torch.randn(5, 7, dtype=dtype)
        index = torch.tensor([6, -1, 0, 3, 3, -1, 2, 1, 5], dtype=torch.int64)
        out = _native.gather(src, index, torch.empty(5, 9, dtype=dtype))
        expected = torch.cat([src, torch.zeros(5, 1, dtype=dtype)], 1)[:, torch.where(index < 0, 7, index)]
        assert torch.equal(out, expected)
    with pytest.raises(ValueError):
        _native.gather(src, torch.tensor([7]), torch.empty(5, 1, dtype=dtype))


@pytest.mark.parametrize("rows, n", [(3, 10), (7, 1030)])  # 1030: more than one chunk of bins and of columns
def test_acdc_backward_kernels_match_torch(rows, n):
    if not _native.available():
        pytest.skip(_native.native_status())
    import torch

    for dtype in (torch.float64, torch.float32):
        tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-4}
        bins = n // 2 + 1
        G = torch.randn(rows, bins, dtype=dtype), torch.randn(rows, bins, dtype=dtype)
        U = torch.randn(rows, bins, dtype=dtype), torch.randn(rows, bins, dtype=dtype)
        m00, m01, m11 = (torch.randn(bins, dtype=dtype) for _ in range(3))
        g, acc = torch.stack(G, -1), torch.empty(bins, 3, dtype=dtype)
        assert _native.bin_grad_map_(g, torch.stack(U, -1), m00, m01, m11, acc) is g
        expected = torch.stack([(G[0] * U[0]).sum(0), (G[0] * U[1] + G[1] * U[0]).sum(0), (G[1] * U[1]).sum(0)], 1)
        torch.testing.assert_close(acc, expected, **tol)
        torch.testing.assert_close(g[..., 0], m00 * G[0] + m01 * G[1], **tol)
        torch.testing.assert_close(g[..., 1], m01 * G[0] + m11 * G[1], **tol)

        grad, x, a = torch.randn(rows, n, dtype=dtype), torch.randn(rows, n, dtype=dtype), torch.randn(n, dtype=dtype)
        for relu_mask in (False, True):
            scaled, acc = grad.clone(), torch.empty(n, dtype=dtype)
            assert _native.colsum_scale_(scaled, x, a, acc, relu_mask) is scaled
            torch.testing.assert_close(acc, (grad * x).sum(0), **tol)
            expected = grad * a * (x > 0) if relu_mask else grad * a
            torch.testing.assert_close(scaled, expected, **tol)

    with pytest.raises(ValueError, match="bin_grad_map_"):
        _native.bin_grad_map_(g, g[:1], m00, m01, m11, torch.empty(bins, 3, dtype=dtype))
    with pytest.raises(ValueError, match="colsum_scale_"):
        _native.colsum_scale_(scaled, scaled, a, torch.empty(n, dtype=dtype))  # the gradient may not be x
