"""The classroom mail server, one module per concern; `server.py` beside this package is its front door.

The map of the modules, and which files each ordinary change touches, is in CONTRIBUTING.md
("Where things live"); tests/test_docs.py checks that it names every module here.
"""
