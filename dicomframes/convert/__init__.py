"""Converters: DICOM JSON and pixel bytes to the values users work with. No HTTP, no server.

=============================  ==================================================================
module                         converts
=============================  ==================================================================
:mod:`~.tables`                DICOM JSON objects -> a typed DataFrame (one row per object)
:mod:`~.rows`                  DataFrame rows -> query parameters, pydicom Datasets; missing values
:mod:`~.pixels`                frame bytes + pixel description -> numpy arrays (every syntax)
:mod:`~.arrow`                 the Arrow (Parquet) schema of those DataFrames, VR by VR
:mod:`~.link`                  what a DataFrame keeps of its server (``df.attrs["dicomframes"]``)
=============================  ==================================================================

They import :mod:`dicomframes.standard` and :mod:`dicomframes.errors` only (a test holds it).
"""
