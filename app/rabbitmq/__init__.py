"""What jobstack asks of RabbitMQ itself: the arguments of the queues it declares
(``queue_arguments``: classic or quorum queues) and the nodes it connects to (``nodes``:
one URL or a cluster's several, each with heartbeats)."""
