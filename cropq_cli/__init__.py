"""The ``cropq`` command line: the local development stack (``cropq up``), engine-only cropping
(``cropq crop``), operator commands (``cropq keys``, ``cropq config``) and a client for a running service.

It sits on top of everything else: it may import ``api`` and ``worker``; neither imports it."""
