"""What a run is asked to do: typed settings, model specs, context lengths, the session's matrix."""
