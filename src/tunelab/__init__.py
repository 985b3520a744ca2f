"""tunelab: fine-tune pretrained language models, from data to production."""

import warnings

__version__ = "0.1.0"

# peft calls this transformers 5 property on every LoRA model; the message is theirs to fix, not the user's
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
