"""Suite-wide settings.

The suite runs small batches for a few steps, so on CPU its time is XLA compile time. XLA's backend
optimisation passes are turned off for the tests (``--xla_backend_optimization_level=0``): compiles take
about a third less CPU, the programs run slower, and no test times anything. Small while loops are then not
hoisted into kernels of their own (see below). Set ``JAXLM_TEST_XLA_OPT=1`` to
keep XLA's defaults. Tests that start a subprocess set their own ``XLA_FLAGS``.
"""

from __future__ import annotations

import os

if os.environ.get("JAXLM_TEST_XLA_OPT") != "1":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in _flags:
        # Without optimisation XLA:CPU still compiles a while loop over tiny buffers (a
        # single env's substeps) as one optimised kernel, which fuses multiplies into adds
        # (FMAs) where the other kernels do not: the same step would then round differently
        # for one env and for a batch. Threshold 0 keeps every loop on the common path.
        os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0"
                                   " --xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=0").strip()
