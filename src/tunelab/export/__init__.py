"""What leaves a run: the self-contained model directory (save / load) and LoRA merging."""
