"""The command lines of densekit's tools, one module per command, each with ``main(argv)``
returning the exit code (0 ok, 1 some inputs failed, 2 bad arguments or files). The scripts in
``tools/`` are shells over them; tests call them directly."""
