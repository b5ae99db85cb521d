"""Sub-commands of ``twin``, one module each, each with ``register(subparsers)``.

A command module imports only the standard library at top level; heavy work is imported inside
the function that runs the command, so ``twin --help`` stays fast.
"""

#: The modules ``twin.cli`` loads, in the order their commands appear in ``twin --help``.
COMMAND_MODULES = (
    "twin.commands.render",
    "twin.commands.simulate",
    "twin.commands.sweep",
    "twin.commands.serve",
    "twin.commands.scenario",
    "twin.commands.view",
    "twin.commands.replay",
    "twin.commands.gateway_sim",
    "twin.commands.demo",
)
