"""The run folder: the Run type, its files written atomically, the content-addressed cache and fingerprints, the summary."""
