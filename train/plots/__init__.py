"""PNG pictures of training and recognition: a run's curves, one video's CTC posteriors."""
