"""The run configuration: the typed sections of a run, `RunConfig`, YAML + `--set` loading, the reference."""
