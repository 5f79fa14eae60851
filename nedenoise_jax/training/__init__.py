"""Training: the config (:mod:`.config`), the state and optimizer (:mod:`.state`), checkpoints
(:mod:`.checkpoints`) and the loop (:mod:`.loop`, ``train_and_evaluate``)."""
