"""How a committed job row reaches RabbitMQ.

The job row is the outbox: it is committed before anything is published, and the message
id is the job id. One row's way to the broker:

1. ``app.jobs.submit`` commits the row, then calls :func:`publish.publish`; inside a
   caller's transaction, :mod:`after_commit` holds the message until that transaction
   commits (a rollback drops it).
2. :mod:`confirms` sends every message of a commit, then waits once for RabbitMQ's
   publisher confirms of all of them.
3. :mod:`publish` records ``published_at`` on the rows: the moment each message RabbitMQ
   confirmed was sent, written in bulk, never waiting for a row a worker holds.
4. A row whose publish failed or never happened, a scheduled job now due, and a retry
   that could not be enqueued are published by the :mod:`relay`, a thread in one worker
   process at a time, chosen by a database lease (:mod:`leases`).
"""
