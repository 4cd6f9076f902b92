"""Peers of jobstack in ``make bench``: Celery, Procrastinate, Oban for Python.

python -m bench.peers
"""
