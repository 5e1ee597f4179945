"""The ``trackmesh`` command line."""
