"""Evaluation: metrics (:mod:`.metrics`), noise models (:mod:`.noise`) and the evaluation loop (:mod:`.evaluate`)."""
