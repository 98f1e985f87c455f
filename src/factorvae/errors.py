"""One exception type for every problem a user can fix (bad input, files, options).

The CLI prints its message on one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input: a wrong file, option, config value or run directory."""


def check_keys(what: str, given, allowed) -> None:
    """Refuse keys of ``given`` that are not in ``allowed`` (a typo must not silently run an
    experiment with a default), naming the closest valid key for each.

    ``what`` names one key, e.g. ``"optim.vae option"``: ``unknown optim.vae option(s): 'lrr'
    (did you mean 'lr'?); valid: lr, betas, eps``."""
    allowed = [str(k) for k in allowed]
    unknown = [str(k) for k in given if str(k) not in allowed]
    if not unknown:
        return
    parts = []
    for k in unknown:
        close = difflib.get_close_matches(k, allowed, n=1)
        parts.append(k + (f" (did you mean {close[0]}?)" if close else ""))
    raise UserError(f"unknown {what}(s): {', '.join(parts)}; valid: {', '.join(allowed)}")


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a failed allocation: MemoryError (numpy's too), torch's OutOfMemoryError,
    or torch's CPU allocator failing (a RuntimeError saying "can't allocate memory"). Imports
    nothing, so the command line can ask it without loading torch."""
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)))
