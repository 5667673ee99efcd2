"""The stages, one module each: what a command does, with its inputs and outputs on disk.

Each stage takes a typed configuration and the artifacts it reads, and returns what it wrote;
the CLI parses options, calls one stage and prints. `run` composes the others; nothing else
does. Import a stage from its module (`from automtl_cli.stages.search import search`): the
package itself imports nothing, so a command loads only what it runs.
"""
