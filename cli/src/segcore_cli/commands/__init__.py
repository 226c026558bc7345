"""Sub-commands of ``segcore``: one module each, with ``register(subparsers)`` and ``run(args)``."""
