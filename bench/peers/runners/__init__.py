"""Runner scripts, one per peer, each executed by that peer's own venv Python
(``python -m bench.peers.runners.<peer>_runner``); the project's venv never imports them."""
