"""What operators do to jobs and queues.

:mod:`control` cancels and retries jobs; :mod:`cancellation` stops running ones inside
the workers (broadcast and database poll); :mod:`dead_letters` lists and re-drives
``<queue>.XQ``; :mod:`retention` prunes finished jobs; :mod:`queues` reads queue depths
and consumers from the broker.
"""
