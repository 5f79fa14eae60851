"""Input and output: image files (:mod:`.images`) and weights files with the shipped models (:mod:`.weights`)."""
