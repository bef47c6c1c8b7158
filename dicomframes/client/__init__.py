"""The DICOMweb client: transport, exchange records, QIDO, the Client facade and its helpers.

================  ==============================================================================
module            job
================  ==============================================================================
transport         authentication, retries, timeouts, error statuses as typed errors
connections       the session's connections: ``^`` kept raw in queries, watched by deadlines
limits            what an answer may be: size, inflation, JSON size and depth, header lines
exchange          exchange records: history, curl, transcripts, redaction, body summaries
qido              QIDO-RS query parameters, the query string and paging
facade            the :class:`Client` (every DICOMweb call) and :func:`connect`
frames            frames and volumes streamed into numpy arrays
metadata_cache    pixel metadata of instances and series, cached on each client
images            client.image: a series as an xarray DataArray in physical units
surface           the Protocol of the Client calls the helper modules make
discover          finding the files to upload and reading their headers
batches           one STOW-RS request: batching, the streamed body, each outcome
store             bulk STOW-RS: parallel requests, progress, resume, the outcome table
download          retrieving instances into a folder of Part-10 files
credentials       bearer tokens that refresh: strings, token functions, TokenCredentials
throttle          429/503 pause every thread of a client (Retry-After, backoff with jitter)
concurrency       requests in flight by the measured round trip, without oversubscribing CPU
changefeed        the server's change feed (Azure model) read as a typed DataFrame
parts             the files of a harvested Parquet folder: parts, journal, recorded state
mirror            harvest(update=True): the studies changed since the recorded state, refetched
================  ==============================================================================
"""

from .credentials import AZURE_DICOM_SCOPE, TokenFile
from .exchange import Exchange, PartInfo
from .facade import Client, connect
from .qido import qido_params

__all__ = ["AZURE_DICOM_SCOPE", "Client", "Exchange", "PartInfo", "TokenFile", "connect",
           "qido_params"]
