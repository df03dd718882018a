"""The application: the `mgjax` command line, run configs, run directories, the jobs behind the
commands, reports, and distributed start-up. Nothing in the library imports it."""
