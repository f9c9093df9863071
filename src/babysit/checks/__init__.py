"""Before learning: the gradient check and the sanity checks (the notes' first two chapters).

``checks.gates`` lists what ``train.sanity`` / ``train.gradcheck`` and the CLI run.
"""
