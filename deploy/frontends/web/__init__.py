"""`qslr web`: a single page to try the served recogniser on one's own video, in a browser."""
