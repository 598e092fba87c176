"""Evaluation: held-out task accuracy of fine-tuned models (`sft_tasks`)."""
