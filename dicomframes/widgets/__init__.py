"""Notebook widgets (ipywidgets 8) on top of the public API: a study browser and an uploader.

>>> from dicomframes import connect
>>> from dicomframes.widgets import StudyBrowser, Uploader
>>> client = connect()
>>> StudyBrowser(client)      # doctest: +SKIP
>>> Uploader(client)          # doctest: +SKIP
"""

from .browser import StudyBrowser
from .uploader import Uploader

__all__ = ["StudyBrowser", "Uploader"]
