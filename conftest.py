"""Collection rules for the whole tree (doctests of the packages included)."""

from __future__ import annotations

import importlib.util

#: PyTorch is an optional extra (``.[neural]``). Without it the module that trains the
#: sequential model cannot even be imported, so its doctest is not collected; its tests
#: in tests/test_sasrec.py are skipped with that reason. CI installs the extra.
collect_ignore = [] if importlib.util.find_spec("torch") else ["offline/models/sasrec.py"]
