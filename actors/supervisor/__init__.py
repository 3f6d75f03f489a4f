"""The trainer supervisor: worker processes, the devices they hold, and what they report.

``core`` (the actor: hands segments and stop decisions to its I/O side), ``io``
(its sockets and processes), ``devices`` (the device pool: never more than ``n_gpus``),
``launcher`` (argv, process groups, whole-group kills).
"""
