"""Run one fuzz target with atheris: ``python -m tests.fuzz.run TARGET [libFuzzer flags] [CORPUS]``.

Coverage is Python's (the modules are instrumented at import); the compiled codec is not
instrumented, the twin is, and the differential check ties the two together. A crash
writes ``crash-<sha1>`` in the working directory and exits non-zero: turn it into a
regression test.
"""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports(include=["gateway", "drivers"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    logging.disable(logging.CRITICAL)  # refusals are logged by design; millions of lines help no one
    name = sys.argv[1]
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
