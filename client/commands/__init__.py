"""The ``jigsaw`` commands, one module per group: each module's ``add_*`` functions add a
command's parser to the subparsers object and set its ``func`` (``args -> exit code``).

:mod:`client.cli` builds the parser from them and maps exceptions to exit codes;
:mod:`client.commands.common` holds what they share (exit codes, terminal, progress, TLS).
Heavy dependencies (the servers, gRPC stubs) are imported inside the command functions, so
``jigsaw --help`` and a command start without loading every service.
"""
