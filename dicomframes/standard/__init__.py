"""The DICOM standard layer: the rules of DICOM and DICOMweb, each written once.

No HTTP, no pandas, no files: byte streams and Python values in, Python values out. Both the
client side and the embedded server use these modules, and nothing else in dicomframes holds
these rules.

==================  ===========================================================================
module              rules
==================  ===========================================================================
tags                tags, keywords, VRs and VR families (the data dictionary)
temporal            DA / TM / DT parsing and formatting, query values, time normalisation
personname          PN groups, readable names and back, words for fuzzy matching
dicomjson           the DICOM JSON model (PS3.18 F.2): Dataset <-> JSON, typed values
mediatypes          Content-Type and Accept: parameters, boundaries, ranked media ranges
multipart           multipart/related: streaming decode and encode
transfer_syntax     transfer syntax UIDs, native vs compressed, frame media types
paths               study / series / instance / frames resource paths, frame lists
attributes          QIDO-RS attributes per level, defaults, computed attributes
stow                STOW-RS reason codes, answers built and read
pixeldesc           the Image Pixel description: dtype, frame shape, frame size
pixellayout         the Pixel Data element header and where each frame lies in a file
lut                 modality and VOI LUTs: stored values to output units to display
uids                UID validation and generation
changefeed          the change feed model (Azure DICOM service): fields, actions, states, paging
==================  ===========================================================================
"""
