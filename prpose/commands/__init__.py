"""Glue between the `prpose` command line and the library: one module per subcommand."""
