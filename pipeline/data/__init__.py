"""Recordings on disk: chunked tick files, recording the live stream and a driver, importing seed 004, histograms of what was recorded."""
