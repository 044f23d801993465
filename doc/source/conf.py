"""Sphinx configuration of the nova-balloon operator docs.

Built by ``tox -e docs`` and by tools/run-tests.sh with warnings as errors,
so a broken reference or a malformed option help text fails the build.
"""

from __future__ import annotations

project = 'nova-balloon'
copyright = 'nova-balloon developers'

# oslo_config.sphinxext renders the options of the oslo.config.opts entry
# point namespaces named in ``.. show-options::`` (configuration.rst): the
# reference comes from the code, as the generated sample does.
extensions = ['oslo_config.sphinxext']

master_doc = 'index'
exclude_patterns: list[str] = []
# Every page is in a toctree; a dangling :doc: or :ref: is an error under -W.
nitpicky = False
pygments_style = 'sphinx'
html_theme = 'alabaster'
html_static_path: list[str] = []
html_title = 'nova-balloon'
