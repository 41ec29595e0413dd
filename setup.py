"""Build the optional C accelerator ``torchckpt.format._native`` (x86-64 only).

Everything else is in ``pyproject.toml``. The extension is ``optional``: where
it does not compile (no C compiler, another architecture), the install goes on
and torchckpt uses the ``crc32c`` package instead (``torchckpt/format/_io.py``).
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

setup(ext_modules=ext_modules)
