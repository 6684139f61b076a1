"""Suite-wide settings.

The suite runs small batches for a few steps, so on CPU its time is XLA compile time. XLA's backend
optimisation passes are turned off for the tests (``--xla_backend_optimization_level=0``): compiles take
about a third less CPU, the programs run slower, and no test times anything. Set ``JAXLM_TEST_XLA_OPT=1`` to
keep XLA's defaults. Tests that start a subprocess set their own ``XLA_FLAGS``.
"""

from __future__ import annotations

import os

if os.environ.get("JAXLM_TEST_XLA_OPT") != "1":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in _flags:
        os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0").strip()
