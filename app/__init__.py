"""jobstack's core: the job record, its state machine, and the way to and from RabbitMQ.

Top-level modules are the shared vocabulary (config, defaults, errors, db, models,
states, transitions, messages, context, jobs, broker, ...); each package answers one
question: ``outbox`` (how a row reaches RabbitMQ), ``recording`` (how a worker's outcome
becomes durable before the ack), ``middleware`` (what Dramatiq runs around each message),
``operations`` (what operators do), ``workloads`` (the shipped workloads), ``cli`` (the
``jobstack`` command) and ``migrations`` (the database schema). docs/architecture.md maps
them all.
"""
