"""``python -m app.cli.single_signal -- COMMAND…``: run COMMAND in a session of its own
and pass a stop signal on to it once, as SIGTERM, to its main process only.

honcho (``jobstack up``) stops a process by signalling its whole process group. Dramatiq's
main process forwards SIGTERM to its worker processes, so they would get it twice, and a
second signal makes a worker process exit at once, abandoning its running jobs. Here
only Dramatiq's main process is signalled, and it shuts down gracefully: running jobs
finish within its ``--worker-shutdown-timeout``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m app.cli.single_signal -- COMMAND [ARGS…]", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, start_new_session=True)
    forwarded = False

    def forward(_signum: int, _frame: FrameType | None) -> None:
        nonlocal forwarded
        if not forwarded:
            forwarded = True
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
