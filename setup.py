"""Build the optional Cython accelerators in ext/ into modules inside `gateway`.

The extension is optional: without a C compiler (or Cython) the install still
succeeds and the pure-Python twins serve.  Under CI=true, or with
SCHWEBE_REQUIRE_EXTENSIONS=1, a failed build fails the install so that CI can
never silently test only the twin.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

EXTENSIONS = [
    # (module inside gateway, source in ext/)
    ("gateway.frames._frames_c", "ext/_frames_c.pyx"),
]


def _strict() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(
        "SCHWEBE_REQUIRE_EXTENSIONS", ""
    ) == "1"


def _skip() -> bool:
    return os.environ.get("SCHWEBE_NO_EXTENSIONS", "") == "1" and not _strict()


class OptionalBuildExt(build_ext):
    """build_ext that downgrades a failed compile to a warning unless strict."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any toolchain failure
            self._fail(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if _strict():
            raise exc
        sys.stderr.write(
            f"\nWARNING: the Cython extension could not be built ({exc}); "
            "schwebe will run on the pure-Python twin.\n\n"
        )


def _extensions() -> list[Extension]:
    if _skip():
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if _strict():
            raise
        sys.stderr.write("WARNING: Cython missing; building without extensions.\n")
        return []
    exts = [
        Extension(name, [src], optional=not _strict(), extra_compile_args=["-O2"])
        for name, src in EXTENSIONS
    ]
    # cythonize() keeps the Extension objects (and so the `optional` flag); the
    # OptionalBuildExt above is the belt to that braces.
    try:
        out = cythonize(exts, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True})
    except Exception as exc:  # noqa: BLE001
        if _strict():
            raise
        sys.stderr.write(f"WARNING: cythonize failed ({exc}); building without extensions.\n")
        return []
    for e in out:
        e.optional = not _strict()
    return list(out)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
