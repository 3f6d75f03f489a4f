"""Smart Tuner's actors and their runtime: the coordinator, the sequencer (journal host),
the bus, the actor shell with supervision, and the command line.

The coordinator never imports torch or the model.
"""
