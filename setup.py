"""Build daemonkit, compiling its per-frame path with mypyc where a C compiler exists.

The metadata lives in setup.cfg; this file only decides the extension modules.
The modules to compile are listed in daemonkit/core/compiled.py (read with
runpy: nothing of daemonkit is imported here). They are compiled from the same
.py files that are installed beside them, which stay as the fallback.

The pure-Python core is installed, with one line saying why, when:

* ``DAEMONKIT_NO_EXTENSIONS`` is set (to anything but empty or ``0``): a pure
  wheel is built this way;
* no working C compiler (with the Python headers) is found: tried once, with a
  ten-line C file, before mypyc spends time type-checking;
* mypyc is not importable (the build requirements in pyproject.toml bring it;
  a build without isolation may lack it).

A compile error in the generated C after the probe succeeded is a real bug and
fails the build loudly instead of hiding behind the fallback.
"""

from __future__ import annotations

import os
import runpy
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
SWITCH = runpy.run_path(str(HERE / "daemonkit" / "core" / "compiled.py"), run_name="_switch")


def _say(message: str) -> None:
    print(f"daemonkit: {message}", file=sys.stderr)


def _compiler_works() -> bool:
    """Compile a file that includes Python.h; False (and why) if that fails."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("#include <Python.h>\nint daemonkit_probe(void) { return 0; }\n")
        try:
            compiler.compile(
                [str(source)],
                output_dir=tmp,
                include_dirs=[sysconfig.get_paths()["include"]],
            )
        # Any failure means no usable compiler. (Not just distutils' errors:
        # which distutils raised them depends on SETUPTOOLS_USE_DISTUTILS.)
        except Exception as exc:
            _say(f"no working C compiler ({exc}); installing the pure-Python core")
            return False
    return True


def ext_modules() -> list[Extension]:
    """mypyc's extension modules for the compiled core, or [] for the pure one."""
    if SWITCH["extensions_disabled"]():
        _say(f"{SWITCH['NO_EXTENSIONS_ENV']} is set; installing the pure-Python core")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed (pip install mypy); installing the pure-Python core")
        return []
    if not _compiler_works():
        return []
    paths = [module.replace(".", "/") + ".py" for module in SWITCH["COMPILED_MODULES"]]
    os.chdir(HERE)  # mypycify takes paths relative to the project
    # mypyc type-checks what it compiles. Not with the project's strict
    # settings (`make typecheck` does that, as Python 3.10): the build
    # environment has mypy but not uvloop, colorlog or cronsim, whose types are
    # Any there, which strict mode rejects; what the compiled code needs of
    # them is Any either way.
    flags = ["--config-file=", "--ignore-missing-imports"]
    # The modules share one library of mypyc's runtime. Named inside the
    # package (daemonkit/core/_native__mypyc.*.so) rather than after a hash of
    # the module list at the top level: an in-place rebuild then replaces it
    # where the editable install finds it, and adding a module keeps its name.
    extensions: list[Extension] = mypycify(
        [*flags, *paths], opt_level="3", group_name="daemonkit.core._native"
    )
    return extensions


setup(ext_modules=ext_modules())
