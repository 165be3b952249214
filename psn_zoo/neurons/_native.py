"""Fused CPU kernels for the PSN family, compiled from ``csrc/psn_cpu.c`` on first use and called via ctypes.

The PyTorch path of :class:`~psn_zoo.neurons._psn_kernels.DenseThreshold` makes about eight passes over ``[T, N]``
tensors (GEMM, threshold; in backward the recomputed GEMM, three surrogate steps, two GEMMs, a sum). At small T each
pass is a memory round trip, and on a small CPU they cost more than the arithmetic. The C kernel does the whole
forward in one pass and the whole backward in another, block by block in L1, and skips the zeros outside a band
(masked PSN at λ = 1, sliding PSN: order k, so k multiply-adds per output instead of T). It is used when:

- the tensors are float32 on the CPU, contiguous, ``[T, N]`` with ``2 <= T <= MAX_T`` and ``N >= MIN_COLUMNS``
  (``N >= WIDE_T_MIN_COLUMNS`` above ``T = WIDE_T``), and the surrogate is ATan;
- a C compiler with OpenMP is found (``$CC``, else ``cc``, ``gcc``, ``clang``) and the build succeeded.

**Its arithmetic is its own and the same on every CPU** (docs/numerics.md): the membrane ``W·x`` is one fused
multiply-add chain per output, ascending over time from 0, and every other step is one IEEE operation. fma is
correctly rounded, so the AVX-512 registers, the portable loops (any other CPU) and any thread count give the same
bits. A BLAS has no such contract: MKL's ``torch.mm`` sums ``[T, T]·[T, N]`` in an order that depends on the CPU and
on T (measured on an AMD EPYC: without fma below T = 4, mixed at T = 5-7 and 9-11, the kernel's order elsewhere; on
Intel Xeons the kernel's order at every T). So the kernel does not try to match the BLAS; SpikingJelly's spikes,
which come from that BLAS, equal ours except where the membrane lies within float32 round-off of the threshold.

Otherwise, or with ``PSN_ZOO_NATIVE=0``, the PyTorch path runs (torch's BLAS: the same operations as SpikingJelly,
so its bits on the same machine). The shared library is cached under ``$PSN_ZOO_CACHE/kernels`` (default
``~/.cache/psn_zoo/kernels``), keyed by the source, the compiler, the flags and the CPU (the build targets
``-march=native``), and written atomically.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .surrogate import ATan, Surrogate

log = logging.getLogger(__name__)

#: Largest T the fused kernel takes. Measured on the 2-core CPU (PSN fwd+bwd, dense W): 1.2-1.65x faster than the
#: MKL path from T = 24 to 64 at N = 2^16 and 2^20; its per-thread buffers grow as T² (256 KiB each at T = 64).
MAX_T = 64
#: Above this T the fused kernel needs at least WIDE_T_MIN_COLUMNS columns: at T = 64 its per-call buffers (about
#: 1 MiB per thread) cost more than the arithmetic on thin inputs (N = 2^8-2^14: 1.4x slower than the MKL path in
#: the speed benchmark; N >= 2^16: 1.2-1.4x faster).
WIDE_T = 32
WIDE_T_MIN_COLUMNS = 1 << 16
SOURCE = Path(__file__).with_name("csrc") / "psn_cpu.c"
ABI_VERSION = 7
#: The build's flags but ``-march``, which :func:`flags` adds (contraction off: every fma in the source is explicit).
FLAGS = ("-O3", "-mprefer-vector-width=512", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared")
#: Narrowest input the fused kernel takes: below it the per-call costs (packing W, starting the OpenMP team) are
#: larger than the work.
MIN_COLUMNS = 256


class NativeBuildError(RuntimeError):
    """The kernel could not be compiled or loaded (no compiler, a failed build, an unloadable library)."""


def enabled() -> bool:
    return os.environ.get("PSN_ZOO_NATIVE", "1") != "0"


def cache_dir() -> Path:
    """``$PSN_ZOO_CACHE/kernels``, else ``$XDG_CACHE_HOME/psn_zoo/kernels`` (``~/.cache/psn_zoo/kernels``)."""
    if root := os.environ.get("PSN_ZOO_CACHE"):
        return Path(root) / "kernels"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "psn_zoo" / "kernels"


def march() -> str:
    """The ``-march`` of the build: ``$PSN_ZOO_NATIVE_MARCH``, default ``native`` (this CPU). Another value emulates
    another CPU's build: ``x86-64-v3`` an AVX2 CPU, ``x86-64`` any x86-64 (the portable loops throughout)."""
    return os.environ.get("PSN_ZOO_NATIVE_MARCH") or "native"


def flags() -> tuple[str, ...]:
    return (FLAGS[0], f"-march={march()}", *FLAGS[1:])


def find_compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU model and its feature flags (Linux), else the platform."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(dict.fromkeys(wanted)) or f"{platform.machine()} {platform.processor()}"


def library_path(compiler: str) -> Path:
    """Where the build of ``SOURCE`` with ``compiler`` for this CPU lives in the cache."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(flags()).encode(), _cpu_identity().encode()):
        key.update(hashlib.sha256(part).digest())
    return cache_dir() / f"psn_cpu-{key.hexdigest()[:20]}.so"


def _digest(path: Path) -> dict[str, int | str]:
    data = path.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def record_path(library: Path) -> Path:
    """The build record beside a cached library: its size and sha256 when it was built."""
    return library.with_name(library.name + ".sha256.json")


class UntrustedCacheError(NativeBuildError):
    """The kernel folder could be written by another user: a library loaded from it could run their code."""


def _require_private(st: os.stat_result, path: Path, what: str) -> None:
    """Raise unless ``path`` (``st`` its stat) belongs to this user and no one else may write it: dlopen runs a
    library's code, and its build record certifies only what the folder's owner wrote."""
    if not hasattr(os, "getuid"):  # (no POSIX ownership to check)
        return
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        owner = "another user" if st.st_uid != os.getuid() else "you"
        raise UntrustedCacheError(
            f"the {what} {path} belongs to {owner} and has mode {stat.S_IMODE(st.st_mode):04o}: others could plant "
            f"code in it; make it private (chmod 700 on the folder) or point PSN_ZOO_CACHE at a folder only you "
            f"can write"
        )


def _check_folder(folder: Path) -> None:
    """:func:`_require_private` for the kernel folder (through a link, which must be ours too). The library and its
    record are checked again on the descriptors that are read and loaded (:func:`open_verified`)."""
    if folder.is_symlink() and hasattr(os, "getuid") and folder.lstat().st_uid != os.getuid():
        raise UntrustedCacheError(f"the kernel cache folder {folder} is a link made by another user")
    _require_private(folder.stat(), folder, "kernel cache folder")


def _read_private(path: Path, what: str) -> tuple[int, bytes]:
    """Open ``path`` without following a link, check it is a private regular file, read it: ``(fd, data)``; the
    caller owns ``fd`` (the file that was read, whatever the name points to later)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise NativeBuildError(f"{path} is not a regular file ({err.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NativeBuildError(f"{path} is not a regular file")
        _require_private(st, path, what)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return fd, b"".join(chunks)
    except BaseException:
        os.close(fd)
        raise


def open_verified(library: Path) -> int:
    """An open descriptor of ``library`` once it is a private regular file (not a link) whose size and sha256 are
    those recorded at build time (a truncated or altered library would crash the process inside ``dlopen``); load
    from it (:class:`NativeKernels`), so the file checked is the file loaded. Raises :class:`NativeBuildError`."""
    fd, data = _read_private(library, "kernel library")
    try:
        try:
            record_fd, text = _read_private(record_path(library), "build record")
            os.close(record_fd)
            recorded = json.loads(text)
        except UntrustedCacheError:
            raise
        except (NativeBuildError, ValueError) as err:
            raise NativeBuildError(f"{library} has no readable build record ({err})") from None
        if {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} != recorded:
            raise NativeBuildError(f"{library} is damaged (its size or sha256 differs from its build record)")
        return fd
    except BaseException:
        os.close(fd)
        raise


def verify(library: Path) -> None:
    """Raise :class:`NativeBuildError` unless :func:`open_verified` accepts ``library``."""
    os.close(open_verified(library))


def _write_atomically(dest: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file in ``dest``'s folder, then rename it onto ``dest`` (never a half-written file)."""
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build(compiler: str, dest: Path) -> Path:
    """Compile ``SOURCE`` into ``dest`` atomically, then write its build record (:func:`verify`). A new kernel
    folder is private (mode 0700); an existing one must be (:func:`_check_folder`)."""
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_folder(dest.parent)
    start = time.perf_counter()
    digest: dict[str, int | str] = {}

    def compile_into(tmp: Path) -> None:
        cmd = [compiler, *flags(), "-o", str(tmp), str(SOURCE), "-lm"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise NativeBuildError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")
        digest.update(_digest(tmp))

    _write_atomically(dest, compile_into)
    _write_atomically(record_path(dest), lambda tmp: tmp.write_text(json.dumps(digest)))
    log.info("psn_zoo: compiled the fused CPU kernels into %s in %.1f s", dest, time.perf_counter() - start)
    return dest


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    """The C code trusts every pointer it gets: refuse anything but a contiguous float32 CPU tensor of ``shape``."""
    if not (t.is_cpu and t.dtype is torch.float32 and t.is_contiguous() and t.shape == shape) or t.is_neg():
        layout = "" if t.is_contiguous() else ", not contiguous"
        layout += ", a negated view (resolve_neg() first)" if t.is_neg() else ""
        raise ValueError(
            f"fused PSN kernel: {name} must be a contiguous float32 CPU tensor of shape {list(shape)}; got "
            f"{list(t.shape)} {t.dtype} on {t.device}{layout}"
        )


def _dense(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in contiguous memory (a negated view's sign is a flag the C code cannot see)."""
    return t.resolve_neg().contiguous()


def _columns(x2d: torch.Tensor) -> torch.Size:
    """``(T, N)`` of ``x: [T, N]``, non-empty (its dtype, device and layout are checked with the other tensors)."""
    if x2d.dim() != 2 or x2d.shape[0] < 1 or x2d.shape[1] < 1:
        raise ValueError(f"fused PSN kernel: x must be a non-empty [T, N] tensor; got {list(x2d.shape)}")
    return x2d.shape


def _check_taps(taps: torch.Tensor) -> None:
    if taps.dim() != 1 or taps.shape[0] < 1:
        raise ValueError(f"fused PSN kernel: the sliding PSN's taps must be [k] with k >= 1; got {list(taps.shape)}")
    _check("taps", taps, tuple(taps.shape))


def _require(*specs: tuple[str, torch.Tensor | None, tuple[int, ...]]) -> None:
    """:func:`_check` for each ``(name, tensor, shape)``; a None tensor (a gradient not asked for) is skipped."""
    for name, t, shape in specs:
        if t is not None:
            _check(name, t, shape)


class NativeKernels:
    """The loaded library: forward and backward of ``S = Θ(W·x + b)`` on ``x: [T, N]``.

    ``band=None``: W is dense; ``band=k``: only the causal band of order k of W is read (``W[t, j]`` with
    ``t - k < j <= t``); the rest counts as zero and is skipped, and ``grad_w`` is zero there.
    """

    def __init__(self, path: Path, fd: int | None = None) -> None:
        """``fd``: an open descriptor of the verified file (:func:`open_verified`), loaded through /proc/self/fd where
        there is one, so no other file can take ``path``'s place between the check and ``dlopen``."""
        by_fd = f"/proc/self/fd/{fd}" if fd is not None else None
        try:
            lib = ctypes.CDLL(by_fd if by_fd and os.path.exists(by_fd) else str(path))
            version = lib.psn_abi_version()
        except (OSError, AttributeError) as err:
            raise NativeBuildError(f"cannot load {path}: {err}") from err
        if version != ABI_VERSION:
            raise NativeBuildError(f"{path} has ABI {version}, expected {ABI_VERSION}")
        #: ``"AVX-512"`` where the explicit AVX-512 register code was compiled in, else ``"portable"``.
        self.isa = "AVX-512" if lib.psn_vector_bits() == 512 else "portable"
        p, i, i64, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
        lib.psn_forward.argtypes = [p, i, i, p, p, p, p, i, i64, i]
        lib.psn_forward.restype = None
        lib.psn_backward.argtypes = [p, i, i, p, p, p, p, p, p, p, i, i64, f, f, i]
        lib.psn_backward.restype = None
        lib.psn_forward_sliding.argtypes = [p, i, p, p, p, i, i64, i]
        lib.psn_forward_sliding.restype = None
        lib.psn_backward_sliding.argtypes = [p, i, p, p, p, p, p, p, i, i64, f, f, i]
        lib.psn_backward_sliding.restype = None
        self.path = path
        self._lib = lib

    def forward(
        self, x2d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor,
        membrane: torch.Tensor | None = None, band: int | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """``out = Θ(W·x + b)`` (1.0/0.0); ``membrane`` (optional) receives ``W·x`` without the bias."""
        T, N = _columns(x2d)
        weight, bias = _dense(weight), _dense(bias)
        _require(
            ("x", x2d, (T, N)), ("weight", weight, (T, T)), ("bias", bias, (T,)), ("out", out, (T, N)),
            ("membrane", membrane, (T, N)),
        )  # fmt: skip
        lo, hi = _band_limits(T, band)
        self._lib.psn_forward(
            weight.data_ptr(), lo, hi, bias.data_ptr(), x2d.data_ptr(), out.data_ptr(),
            None if membrane is None else membrane.data_ptr(), T, N, torch.get_num_threads(),
        )  # fmt: skip
        return out

    def backward(
        self, x2d: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, grad_spike: torch.Tensor, alpha: float,
        grad_x: torch.Tensor | None, grad_w: torch.Tensor | None, grad_b: torch.Tensor | None, band: int | None = None,
        membrane: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        """Fill the requested gradients (None: not needed) through the ATan surrogate with ``alpha``; ``grad_w`` is
        zero outside the band. ``membrane``: :meth:`forward`'s ``W·x`` ([T, N]) if it was kept (then it is not
        recomputed; same bits)."""
        T, N = _columns(x2d)
        weight, bias, grad_spike = _dense(weight), _dense(bias), _dense(grad_spike)
        _require(
            ("x", x2d, (T, N)), ("weight", weight, (T, T)), ("grad_w", grad_w, (T, T)), ("bias", bias, (T,)),
            ("grad_b", grad_b, (T,)), ("grad_spike", grad_spike, (T, N)), ("grad_x", grad_x, (T, N)),
            ("membrane", membrane, (T, N)),
        )  # fmt: skip
        lo, hi = _band_limits(T, band)
        a = alpha / 2  # SpikingJelly's constants, rounded to float32 as its elementwise kernels do
        self._lib.psn_backward(
            weight.data_ptr(), lo, hi, bias.data_ptr(), x2d.data_ptr(),
            None if membrane is None else membrane.data_ptr(), grad_spike.data_ptr(),
            None if grad_x is None else grad_x.data_ptr(), None if grad_w is None else grad_w.data_ptr(),
            None if grad_b is None else grad_b.data_ptr(), T, N, a, math.pi * a, torch.get_num_threads(),
        )  # fmt: skip

    def forward_sliding(
        self, x2d: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        """The sliding PSN: :meth:`forward` with the banded Toeplitz matrix of ``taps: [k]`` (built in C, band k) and
        the scalar ``bias`` at every step."""
        T, N = _columns(x2d)
        taps, bias = _dense(taps), _dense(bias).reshape(1)
        _check_taps(taps)
        _require(("x", x2d, (T, N)), ("bias", bias, (1,)), ("out", out, (T, N)))
        self._lib.psn_forward_sliding(
            taps.data_ptr(), taps.shape[0], bias.data_ptr(), x2d.data_ptr(), out.data_ptr(), T, N,
            torch.get_num_threads(),
        )  # fmt: skip
        return out

    def backward_sliding(
        self, x2d: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, grad_spike: torch.Tensor, alpha: float,
        grad_x: torch.Tensor | None, grad_taps: torch.Tensor | None, grad_bias: torch.Tensor | None,
    ) -> None:  # fmt: skip
        """:meth:`backward` of :meth:`forward_sliding`: the matrix gradient is summed onto the taps (diagonal by
        diagonal, rows in order) and the bias gradient over the steps, in C."""
        T, N = _columns(x2d)
        taps, bias, grad_spike = _dense(taps), _dense(bias).reshape(1), _dense(grad_spike)
        _check_taps(taps)
        _require(
            ("x", x2d, (T, N)), ("grad_taps", grad_taps, tuple(taps.shape)), ("bias", bias, (1,)),
            ("grad_bias", None if grad_bias is None else grad_bias.reshape(1), (1,)),
            ("grad_spike", grad_spike, (T, N)), ("grad_x", grad_x, (T, N)),
        )  # fmt: skip
        a = alpha / 2
        self._lib.psn_backward_sliding(
            taps.data_ptr(), taps.shape[0], bias.data_ptr(), x2d.data_ptr(), grad_spike.data_ptr(),
            *(None if g is None else g.data_ptr() for g in (grad_x, grad_taps, grad_bias)),
            T, N, a, math.pi * a, torch.get_num_threads(),
        )  # fmt: skip


def _load_verified(path: Path) -> NativeKernels:
    fd = open_verified(path)
    try:
        return NativeKernels(path, fd)
    finally:
        os.close(fd)


@functools.cache
def load() -> NativeKernels | None:
    """Build (or find in the cache) and load the kernels once per process; None, with one warning, if that fails."""
    compiler = find_compiler()
    try:
        if compiler is None:
            raise NativeBuildError("no C compiler found ($CC, cc, gcc or clang)")
        path = library_path(compiler)
        if path.parent.exists() or path.parent.is_symlink():
            _check_folder(path.parent)  # an untrusted folder is not used at all (the warning below names the fix)
        if path.exists() or path.is_symlink():
            try:
                return _load_verified(path)  # checked before dlopen: a damaged library would crash the process there
            except UntrustedCacheError as err:  # ours to replace: the folder is private
                log.warning("psn_zoo: %s; rebuilding it", err)
                path.unlink()
            except NativeBuildError as err:  # a damaged cache entry: replace it
                log.warning("psn_zoo: %s; rebuilding it", err)
                path.unlink()
        return _load_verified(build(compiler, path))
    except (NativeBuildError, OSError, subprocess.SubprocessError) as err:
        log.warning(
            "psn_zoo: the fused CPU kernels are not available (%s); the PSN family uses the PyTorch path "
            "(same results, slower). Set PSN_ZOO_NATIVE=0 to skip this attempt.", err,
        )  # fmt: skip
        return None


def describe() -> str:
    """One line for reports: whether the fused kernel runs here, and which build."""
    if not enabled():
        return "off (PSN_ZOO_NATIVE=0)"
    kernels = load()
    if kernels is None:
        return "unavailable (the PyTorch path runs)"
    return f"on, {kernels.isa} loops, -march={march()}"


def _band_limits(T: int, band: int | None) -> tuple[int, int]:
    """(lo, hi): row t of W holds its nonzeros in columns t - lo ... t + hi."""
    if band is None:
        return T - 1, T - 1
    if not 1 <= band <= T:
        raise ValueError(f"fused PSN kernel: band must be in 1..T = {T}; got {band}")
    return band - 1, 0


def dense_kernels(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, surrogate: Surrogate, band: int | None = None
) -> NativeKernels | None:
    """The native kernels if they take this call on ``x: [T, *]`` (as ``[T, N]``; see the module docstring), else
    None. ``weight`` and ``bias`` are only checked for their dtype."""
    T = x.shape[0]
    columns = x.numel() // T if T else 0
    if not (
        2 <= T <= MAX_T
        and columns >= (MIN_COLUMNS if T <= WIDE_T else WIDE_T_MIN_COLUMNS)
        and type(surrogate) is ATan
        and x.is_cpu
        and x.dtype == weight.dtype == bias.dtype == torch.float32
        and x.is_contiguous()
        and not x.is_neg()
        and enabled()
    ):
        return None
    return load()
