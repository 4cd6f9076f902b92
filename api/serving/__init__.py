"""How the API is served: an event loop reads every request and writes every event stream;
Flask views run on a bounded thread pool once a request has fully arrived.

``gunicorn -k api.serving.worker.ApiWorker "api.serving.app:create_asgi_app()"`` (what
``jobstack api`` runs). A client that trickles its headers or body, or holds an event stream
open for minutes, costs a coroutine and a socket, never one of the view threads, so
``/healthz`` keeps answering. Flask decides whether a stream may open (authentication,
tenant, limits: :mod:`api.events`) and hands the open stream to the event loop with an
internal response header (:mod:`api.serving.handoff`), the way nginx's X-Accel-Redirect
hands a file to nginx.
"""
