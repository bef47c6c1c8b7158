"""The DICOMweb client: transport, exchange records, QIDO, the Client facade and its helpers.

================  ==============================================================================
module            job
================  ==============================================================================
facade            the :class:`Client` (every DICOMweb call) and :func:`connect`
surface           the Protocol of the Client calls the helper modules make
transport         the HTTP session, caret-keeping adapter, retries, timeouts, the DICOM JSON
                  reader (``Transport.dicom_json``)
auth              credentials written in a URL, turned into basic auth
deadline          one deadline for a whole call (every page, retry and part of it)
failures          what went wrong: connection failures, server messages, not-DICOM-JSON answers
exchange          exchange records: history, curl, transcripts, redaction, body summaries
qido              QIDO-RS query parameters, the query string, the paging loop and the Pager
partitions        archive-sized reads planned: partitions of whole studies, the quirk-learning
                  Reader, the objects of one partition
harvest           ``client.harvest``: partitions fetched in parallel into a Parquet dataset
frames            frames and volumes streamed into numpy arrays
discover          finding the files to upload and reading their headers
batches           one STOW-RS request: batching, the streamed body, each outcome
store             bulk STOW-RS: parallel requests, progress, resume, the outcome table
download          retrieving instances into a folder of Part-10 files
================  ==============================================================================
"""

from .exchange import Exchange, PartInfo
from .facade import Client, connect
from .qido import qido_params

__all__ = ["Client", "Exchange", "PartInfo", "connect", "qido_params"]
