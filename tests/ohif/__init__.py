"""The OHIF viewer in a real browser against the embedded server (issue 11)."""
