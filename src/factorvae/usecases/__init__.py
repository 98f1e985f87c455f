"""The two use cases every caller goes through: train (or resume) a run directory
(:mod:`factorvae.usecases.train`) and evaluate a run, an export or a pretrained name
(:mod:`factorvae.usecases.evaluate`). The command line, the Python API (``factorvae.train``,
``factorvae.evaluate``) and the sweep call these; ``commands/`` only parses and prints.

This layer sits above ``runs``, ``export``, ``trainer`` and ``metrics`` and below ``sweep`` and
``commands``. Messages for the user before long work starts (the plan, the time estimate) go
through a ``say`` callable the caller gives (None: silent).
"""
