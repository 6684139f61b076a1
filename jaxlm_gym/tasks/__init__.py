"""Task text (templates, action strings) and registry entries, one module per task."""

from . import bandits  # noqa: F401
from . import gridworld  # noqa: F401
from . import maze  # noqa: F401
from . import optimization  # noqa: F401
from . import parking  # noqa: F401
from . import text_nav  # noqa: F401
from . import wordle  # noqa: F401
