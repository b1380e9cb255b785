"""Repository-level conftest.

The plugin itself arrives through the ``pytest11`` entry point once the package is installed
(``pip install -e .``); this file only makes a source checkout work without installing, by
registering the plugin when the entry point has not.
"""

import importlib.metadata


def _installed() -> bool:
    return any(ep.name == "lcplugin" for ep in importlib.metadata.entry_points(group="pytest11"))


if not _installed():
    pytest_plugins = ["lcplugin.plugin.hooks"]
