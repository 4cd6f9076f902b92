"""jobstack's Dramatiq middleware, one behaviour per module.

``app.broker.build_middleware`` builds the stack, in order, and passes each its settings;
nothing here reads the environment. ``after_*`` hooks run in reverse order, so
:mod:`tracking`, first in the list, records the outcome after every other middleware has
decided (a retry enqueued, a time limit disarmed).
"""
