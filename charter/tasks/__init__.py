"""What a task is, apart from its data: the tools a model may call and the checkers that say
whether an answer is right. Evaluation and RL rewards import these; the data that poses the
tasks (`charter.data`) does too."""
