"""How a worker's starts and outcomes become durable before the message is acked.

Why is the ack late? jobstack's rule is that a job's new state is committed before its
message leaves RabbitMQ: if the worker dies first, the message comes back. One outcome's
way, from the actor's return to the ack:

1. The tracking hook (``app.middleware.tracking.Tracking.after_process_message``) turns
   the actor's result or exception into a :class:`changes.RecordOutcome`, attaches an
   :class:`acks.AfterCommit` gate to the message and hands the outcome to the process's
   :class:`group_commit.GroupCommitter`; the worker thread moves on to its next message.
2. The group committer's thread takes every start and outcome waiting, from all worker
   threads, and applies them together with :func:`batch.apply_changes`.
3. The common case takes the batch path: on PostgreSQL one call of the server-side
   function ``jobstack_apply_changes`` (migration 0008, arguments built by
   :mod:`batch_postgres`), elsewhere multi-row statements (:mod:`batch`). Every other
   case (no row yet, a redelivery, a cancellation, a duplicate tick, a webhook to queue)
   takes the general path, one job at a time: :mod:`attempts`, which moves the job with
   ``app.transitions.transition``.
4. After the commit the committer opens the gate; :class:`acks.AckAfterCommitConsumer`,
   the consumer of jobstack's RabbitMQ broker (``app.broker``), then sends the ack or
   nack it was holding.

A start goes the same way, except that the worker thread waits for its commit: the start
decides whether the message runs at all.
"""
