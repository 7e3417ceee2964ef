"""Loading the mini-ImageNet pickle cache without letting a pickle run code.

Only numpy arrays (and the dtypes they need) may be built; dicts, lists,
tuples, strings and numbers need no lookup at all. Anything else a pickle asks
for (``os.system``, ``builtins.eval``, a class to instantiate) is refused
before it is ever imported.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from ..errors import CnncError

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module.startswith("numpy") and name.endswith("DType")
                                           and module.endswith("dtypes")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def load(path: Path) -> Any:
    """Unpickle numpy arrays and plain containers only; a code-running pickle gets CnncError."""
    try:
        with open(path, "rb") as f:
            return _Restricted(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise CnncError(f"{path}: unsafe or corrupt pickle, not loaded ({exc})") from None
    except (EOFError, ValueError, TypeError) as exc:
        raise CnncError(f"{path}: corrupt pickle ({type(exc).__name__})") from None
