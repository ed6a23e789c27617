"""Builds the Cython core and the two Session wire codecs (server and clients); everything
else is declared in pyproject.toml."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# STOCKGATE_DEBUG=1 builds the core with its expensive invariant checks compiled in.
DEBUG = os.environ.get("STOCKGATE_DEBUG") == "1"

extensions = [
    Extension(
        "stockgate.engine._core",
        ["engine/_core.pyx"],
        extra_compile_args=["-O2"],
        define_macros=[("SG_DEBUG", "1" if DEBUG else "0")],
    ),
    # The server's Session wire codec (server/_codec.pyx says why it is in C).
    Extension("stockgate.server._codec", ["server/_codec.pyx"], extra_compile_args=["-O2"]),
    # The clients' Session wire codec (clients/_codec.pyx says why it is in C).
    Extension("stockgate.clients._codec", ["clients/_codec.pyx"], extra_compile_args=["-O2"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
