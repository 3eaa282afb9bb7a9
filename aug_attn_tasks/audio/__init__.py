"""Music tagging on raw waveforms: datasets, cache, metrics, the ``tagging`` recipe and the ``tag`` command."""
