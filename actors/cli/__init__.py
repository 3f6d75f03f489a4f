"""The command line: ``main`` (the parser and ``run``), ``commands`` (tail, replay, status,
stop, salvage and the end-of-run summary). ``run_tuner.py`` and the ``smart-tuner``
script call ``main``.
"""
