"""The growlm-mix corpus's name and its sources' names, light enough for the CLI's ``--help``
(growlm/data/mix.py holds the sources themselves; a test keeps the two in step)."""

NAME = "growlm-mix"
SOURCE_NAMES = ("python-doc", "linux-doc", "python-stdlib", "shakespeare", "brown")
