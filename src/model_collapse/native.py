"""Compile C files shipped with the package into cached shared libraries, loaded with ctypes."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from .paths import cache_dir

__all__ = ["NativeBuildError", "build"]


class NativeBuildError(RuntimeError):
    """No C compiler, or the compiler failed: callers fall back to their NumPy path."""


def compiler() -> str:
    """The C compiler to use: $CC, else cc."""
    return os.environ.get("CC") or "cc"


def _build_key(cc: str, source: str, flags: list[str]) -> str:
    """Hash of everything the binary depends on: source, flags, compiler, CPU features."""
    h = hashlib.sha256(source.encode())
    h.update(" ".join([cc] + flags).encode())
    try:
        h.update(subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout)
    except (OSError, subprocess.SubprocessError):
        pass
    h.update(platform.machine().encode())
    try:   # -march=native: a binary built for one CPU must not be reused on another
        cpu = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith(("flags", "model name"))]
        h.update("\n".join(sorted(set(cpu))).encode())
    except OSError:
        pass
    return h.hexdigest()[:16]


def _compile(cc: str, source: str, flags: list[str], lib: Path) -> None:
    """Compile source into lib, atomically: concurrent builders never see half a file."""
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        src = Path(tmp) / f"{lib.stem}.c"
        src.write_text(source)
        out = Path(tmp) / f"{lib.stem}.so"
        tries = [flags] + ([[f for f in flags if f != "-march=native"]] if "-march=native" in flags else [])
        for fl in tries:   # some compilers lack -march=native
            try:
                res = subprocess.run([cc, *fl, str(src), "-o", str(out), "-lm"],
                                     capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as e:
                raise NativeBuildError(f"could not run the C compiler {cc!r}: {e}") from e
            if res.returncode == 0:
                break
        else:
            raise NativeBuildError(f"{cc} failed (exit status {res.returncode}): "
                                   f"{res.stderr.strip()[-2000:] or 'no output'}")
        os.replace(out, lib)


def build(name: str, c_file, flags: list[str]) -> ctypes.CDLL:
    """Build (or reuse) cache_dir()/native/<name>-<key>.so from the C file c_file (a path or an
    importlib.resources Traversable) with the given flags, and load it.

    The key hashes the source, flags, compiler version and CPU. Raises NativeBuildError when no
    compiler is found or the build fails, OSError when the cache is not writable.
    """
    source = (Path(c_file) if isinstance(c_file, (str, os.PathLike)) else c_file).read_text()
    cc = compiler()
    if shutil.which(cc) is None:
        raise NativeBuildError(f"no C compiler found (CC={cc!r}); install one (e.g. gcc) or set CC")
    folder = cache_dir() / "native"
    folder.mkdir(parents=True, exist_ok=True)
    lib = folder / f"{name}-{_build_key(cc, source, list(flags))}.so"
    if not lib.exists():
        _compile(cc, source, list(flags), lib)
    return ctypes.CDLL(str(lib))
