"""DICOMweb: the PACS client, the write-back objects (SR, Secondary Capture), STOW-RS parsing."""
