"""Task text (templates, action strings) and registry entries, one module per task."""

from . import maze  # noqa: F401
from . import text_nav  # noqa: F401
from . import wordle  # noqa: F401
