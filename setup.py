"""Build the optional C accelerators: ``torchckpt.format._native`` (x86-64 only),
``torchckpt.graph._wire_native`` and ``torchckpt.format._entries_native`` (everywhere).

Everything else is in ``pyproject.toml``. The extensions are ``optional``: where
one does not compile (no C compiler, another architecture), the install goes on
and torchckpt uses the ``crc32c`` package (``torchckpt/format/_io.py``), the
Python graph codec (``torchckpt/graph/wire.py``) and the Python entry decoder
(``torchckpt/format/_fast_entries.py``) instead.
"""

import platform
import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64"):
    ext_modules.append(Extension(
        "torchckpt.format._native",
        sources=["torchckpt/format/_native.c"],
        extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        optional=True,
    ))

# The object-graph codec is portable C: built everywhere, optional too (torchckpt then
# uses the Python codec of torchckpt/graph/wire.py).
ext_modules.append(Extension(
    "torchckpt.graph._wire_native",
    sources=["torchckpt/graph/_wire_native.c"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"] if sys.platform != "win32" else [],
    optional=True,
))

# The payload locations of plain bundle entries: portable C as well, optional too (torchckpt
# then decodes the entries in Python, torchckpt/format/_fast_entries.py).
ext_modules.append(Extension(
    "torchckpt.format._entries_native",
    sources=["torchckpt/format/_entries_native.c"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"] if sys.platform != "win32" else [],
    optional=True,
))

setup(ext_modules=ext_modules)
