"""What a run produced: the run folder, summaries, figures, statistics, gates, reports, merges."""
