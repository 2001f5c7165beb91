"""Chest X-ray triage: the `xray` command line, and the contract that training and serving share.

`xray.contract` holds what both halves must agree on (the manifest, the image types and
decoders, the preprocessing, the served model object, the ensembles and the input check);
`training` builds bundles, `service` serves them, and `xray.cli` dispatches to either.
"""
