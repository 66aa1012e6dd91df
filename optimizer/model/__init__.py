"""Optimization models (Pyomo and direct highspy).

HiGHS prints a copyright banner to the process's stdout the first time a `highspy.Highs` is
created, whatever `output_flag` says afterwards, which landed in the middle of `evfleet demo`'s
progress output. Importing this package creates that first instance with stdout sent to
/dev/null, so solver output reaches the terminal only when a caller turns `output_flag` on.
"""

from __future__ import annotations

import os
import sys

import highspy


def _create_first_highs_quietly() -> None:
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


_create_first_highs_quietly()
