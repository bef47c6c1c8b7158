"""Conformance suite of the embedded DICOMweb server (plain HTTP)."""
