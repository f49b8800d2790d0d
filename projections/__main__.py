"""``python -m projections [rebuild]``: the history projector under its older name, kept because the Kubernetes
manifest (infra/kubernetes/base/projector.yaml) runs it. New callers name the projector:
``python -m projections.history``, ``python -m projections.payments``, ``python -m projections.access_logs``.
"""

from __future__ import annotations

import sys

from projections.history.__main__ import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
