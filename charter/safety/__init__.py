"""Defense in depth around a model: an input classifier, a streaming output monitor, and the
guard that puts both around any Generator (`guard.py`)."""
