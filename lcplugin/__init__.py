"""lcplugin: measure how long-context language models hold up, in quality and cost, as context grows.

The package is a pytest plugin (registered through the ``pytest11`` entry point) plus the pieces it
wires together: model specs, engines running in worker processes, benchmark protocols, a results
store, statistical gates against recorded baselines, and a small CLI.
"""

__version__ = "0.1.0"
